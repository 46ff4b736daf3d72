"""The official Python Kubernetes client (`kubernetes` from PyPI) against keyward's Kubernetes API.

Driven by tests/kube/python.rs:  python3 kube_client.py KUBECONFIG MODE [ARG]

MODE:
  read NS        list, read, field and label selectors, 404 as ApiException, delete, and
                 watch.Watch().stream: synthetic ADDED events, a change seen live, the stream
                 ending at timeout_seconds (Secrets s1 and s2 exist in NS, s1 labelled tier=web).
  expired NS RV  a watch from a resourceVersion older than the retained history: the ERROR
                 event (410 Expired) is raised as ApiException(status=410).
  write NS       create (no Content-Type, as the client sends it), patch (strategic merge and
                 JSON patch), replace (with a stale resourceVersion: 409), delete.
  contend NS     many clients at once: read-modify-replace of one counter (409 on a stale
                 resourceVersion, then read again), merge patches of another Secret without a
                 resourceVersion (the server retries its own conflicts), server-side apply of
                 one key per field manager to that Secret; every acknowledged
                 write is in the final state exactly once, and a watch from before them gives
                 exactly the acknowledged writes in order.
  patch-storm NS upstream's TestPatchConflicts: 100 strategic merge patches of one Secret at
                 once (a label each, and a `$patch: delete` of one ownerReference each); all
                 succeed, each effective.
  finalizers NS  a Secret with ten finalizers is deleted (marked), then ten clients at once
                 each remove their own finalizer with a strategic merge patch: all succeed and
                 the last removal deletes it; fifty concurrent creates with generateName all
                 succeed with distinct names.
  apply-race NS  four field managers server-side apply one data key at once, each its own value:
                 without force exactly one wins and the others get the apply conflict naming the
                 winner (409); with force all succeed and the key ends with one owner.
  times NS       read, modify and replace a Secret two managers wrote (the client sends every
                 time it read back with a "+00:00" offset): the times come back as
                 kube-apiserver writes them (whole seconds, "Z"), each manager's unchanged but
                 the replacer's. Leaves Secret "times" in NS.

Prints "ok" on success; any failed check raises.
"""

import base64
import json
import re
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def api(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    return client.CoreV1Api()


def expect_status(fn, status):
    try:
        fn()
    except ApiException as e:
        assert e.status == status, (e.status, e.body)
        return e
    raise AssertionError("expected HTTP %d" % status)


def read(v1, ns):
    lst = v1.list_namespaced_secret(ns)
    names = sorted(s.metadata.name for s in lst.items)
    assert names == ["s1", "s2"], names
    assert lst.metadata.resource_version, "a list carries its resourceVersion"
    # Pages: a continue token and, without selectors, how many Secrets the next pages hold.
    page = v1.list_namespaced_secret(ns, limit=1)
    assert [s.metadata.name for s in page.items] == ["s1"], page.items
    assert page.metadata._continue and page.metadata.remaining_item_count == 1, page.metadata
    last = v1.list_namespaced_secret(ns, limit=1, _continue=page.metadata._continue)
    assert [s.metadata.name for s in last.items] == ["s2"], last.items
    assert last.metadata._continue is None and last.metadata.remaining_item_count is None, last.metadata
    assert last.metadata.resource_version == page.metadata.resource_version, last.metadata
    labelled = v1.list_namespaced_secret(ns, limit=1, label_selector="tier")
    assert labelled.metadata.remaining_item_count is None, labelled.metadata
    s1 = v1.read_namespaced_secret("s1", ns)
    assert s1.data["user"] == "YWRtaW4=", s1.data
    assert s1.metadata.labels == {"tier": "web"}, s1.metadata.labels
    assert [s.metadata.name for s in v1.list_namespaced_secret(ns, label_selector="tier=web").items] == ["s1"]
    assert [s.metadata.name for s in v1.list_namespaced_secret(ns, field_selector="metadata.name=s2").items] == ["s2"]
    assert any(s.metadata.name == "s1" for s in v1.list_secret_for_all_namespaces().items)
    e = expect_status(lambda: v1.read_namespaced_secret("nope", ns), 404)
    assert '"reason":"NotFound"' in e.body, e.body
    e = expect_status(lambda: v1.list_namespaced_secret(ns, field_selector="spec.x=1"), 400)
    assert "field label not supported: spec.x" in e.body, e.body

    # The stream starts with the current Secrets, then sees a delete made once they arrived.
    w = watch.Watch()
    seen = []
    deleter = threading.Thread(target=lambda: v1.delete_namespaced_secret("s2", ns))
    for ev in w.stream(v1.list_namespaced_secret, ns, timeout_seconds=20):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ("ADDED", "s1") in seen and ("ADDED", "s2") in seen and not deleter.is_alive() and not deleter.ident:
            deleter.start()
        if ev["type"] == "DELETED":
            w.stop()
    deleter.join()
    assert seen[:2] == [("ADDED", "s1"), ("ADDED", "s2")], seen
    assert ("DELETED", "s2") in seen, seen
    expect_status(lambda: v1.read_namespaced_secret("s2", ns), 404)

    # timeout_seconds ends the stream (no reconnect when it is given).
    start = time.time()
    events = list(watch.Watch().stream(v1.list_namespaced_secret, ns, resource_version=lst.metadata.resource_version, timeout_seconds=1))
    assert time.time() - start < 10
    assert [e["type"] for e in events] == ["DELETED"], events


def expired(v1, ns, rv):
    try:
        for _ in watch.Watch().stream(v1.list_namespaced_secret, ns, resource_version=rv, timeout_seconds=5):
            pass
    except ApiException as e:
        assert e.status == 410, (e.status, e.reason)
        assert "Expired" in e.reason, e.reason
        return
    raise AssertionError("a watch from a compacted resourceVersion must fail with 410")


def continue_expired(v1, ns):
    """A continue token whose revision was compacted: kube-apiserver's 410 with a token that goes
    on at the current revision from the same key."""
    import json
    first = v1.list_namespaced_secret(ns, limit=3)
    names = [s.metadata.name for s in first.items]
    assert len(names) == 3 and first.metadata._continue, first.metadata
    for i in range(10):
        v1.patch_namespaced_secret(names[0], ns, {"metadata": {"labels": {"round": str(i)}}})
    try:
        v1.list_namespaced_secret(ns, limit=3, _continue=first.metadata._continue)
        raise AssertionError("a continue token of a compacted revision must fail with 410")
    except ApiException as e:
        assert e.status == 410, (e.status, e.body)
        body = json.loads(e.body)
    assert body["reason"] == "Expired" and body["code"] == 410, body
    assert body["message"].startswith("The provided continue parameter is too old to display a consistent list "
                                      "result. You can start a new list without the continue parameter, or use the "
                                      "continue token in this response"), body
    token = body["metadata"]["continue"]
    rest = []
    while token:
        page = v1.list_namespaced_secret(ns, limit=3, _continue=token)
        rest += [s.metadata.name for s in page.items]
        token = page.metadata._continue
    every = [s.metadata.name for s in v1.list_namespaced_secret(ns).items]
    assert names + rest == every, (names, rest, every)


def write(v1, ns):
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="py"), string_data={"a": "one"})
    created = v1.create_namespaced_secret(ns, body)
    assert created.data == {"a": "b25l"}, created.data
    e = expect_status(lambda: v1.create_namespaced_secret(ns, body), 409)
    assert "already exists" in e.body, e.body
    patched = v1.patch_namespaced_secret("py", ns, {"metadata": {"labels": {"p": "1"}}, "stringData": {"b": "two"}})
    assert patched.metadata.labels == {"p": "1"}
    assert patched.data == {"a": "b25l", "b": "dHdv"}, patched.data
    patched = v1.patch_namespaced_secret("py", ns, [{"op": "remove", "path": "/data/b"}])
    assert patched.data == {"a": "b25l"}, patched.data
    stale = created
    stale.data = {"a": "eA=="}
    e = expect_status(lambda: v1.replace_namespaced_secret("py", ns, stale), 409)
    assert "the object has been modified" in e.body, e.body
    live = v1.read_namespaced_secret("py", ns)
    live.data = {"a": "eA=="}
    replaced = v1.replace_namespaced_secret("py", ns, live)
    assert replaced.data == {"a": "eA=="}
    assert int(replaced.metadata.resource_version) > int(live.metadata.resource_version)
    status = v1.delete_namespaced_secret("py", ns)
    status = status if isinstance(status, dict) else status.to_dict()
    assert status["status"] == "Success", status
    expect_status(lambda: v1.read_namespaced_secret("py", ns), 404)


def contend(_v1, ns, replacers=6, increments=12, patchers=4, patches=10, appliers=3):
    new = client.CoreV1Api  # one client (and connection pool) per thread
    first = new().create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="counter"), string_data={"n": "0"}))
    new().create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="bag"), string_data={"-": "-"}))
    start = new().read_namespaced_secret("bag", ns).metadata.resource_version
    assert int(start) > int(first.metadata.resource_version)
    acked, errors, lock = [], [], threading.Lock()

    def replacer():
        v1 = new()
        for _ in range(increments):
            while True:
                cur = v1.read_namespaced_secret("counter", ns)
                n = int(base64.b64decode(cur.data["n"]))
                cur.data = {"n": base64.b64encode(str(n + 1).encode()).decode()}
                try:
                    done = v1.replace_namespaced_secret("counter", ns, cur)
                except ApiException as e:
                    assert e.status == 409 and "the object has been modified" in e.body, (e.status, e.body)
                    continue
                assert int(base64.b64decode(done.data["n"])) == n + 1, done.data
                with lock:
                    acked.append((int(done.metadata.resource_version), "counter", dict(done.data)))
                break

    def patcher(t):
        v1 = new()
        for i in range(patches):
            key = "t%d-%d" % (t, i)
            done = v1.patch_namespaced_secret("bag", ns, {"stringData": {key: key}})
            assert base64.b64decode(done.data[key]).decode() == key, done.data
            with lock:
                acked.append((int(done.metadata.resource_version), "bag", dict(done.data)))

    def guarded(fn, *args):
        try:
            fn(*args)
        except BaseException as e:  # reported by the main thread
            with lock:
                errors.append(repr(e) + " " + str(getattr(e, "body", "")))

    def applier(t):
        # Server-side apply, one field manager per thread, each owning its own key of "bag".
        v1 = new()
        for i in range(patches):
            key, value = "a%d" % t, "%d-%d" % (t, i)
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bag"},
                    "stringData": {key: value}}
            done = v1.patch_namespaced_secret("bag", ns, body, field_manager="applier-%d" % t,
                                              _content_type="application/apply-patch+yaml")
            assert base64.b64decode(done.data[key]).decode() == value, done.data
            with lock:
                acked.append((int(done.metadata.resource_version), "bag", dict(done.data)))

    threads = [threading.Thread(target=guarded, args=(replacer,)) for _ in range(replacers)]
    threads += [threading.Thread(target=guarded, args=(patcher, t)) for t in range(patchers)]
    threads += [threading.Thread(target=guarded, args=(applier, t)) for t in range(appliers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    acked.sort(key=lambda a: a[0])
    assert len({a[0] for a in acked}) == len(acked), "two writes acknowledged at one resourceVersion"
    v1 = new()
    counter = v1.read_namespaced_secret("counter", ns)
    assert base64.b64decode(counter.data["n"]) == str(replacers * increments).encode(), counter.data
    bag = v1.read_namespaced_secret("bag", ns)
    want = {"t%d-%d" % (t, i) for t in range(patchers) for i in range(patches)} | {"-"}
    want |= {"a%d" % t for t in range(appliers)}
    assert set(bag.data) == want, sorted(set(bag.data) ^ want)
    for t in range(appliers):
        assert base64.b64decode(bag.data["a%d" % t]).decode() == "%d-%d" % (t, patches - 1), bag.data
    managers = {m.manager: m.operation for m in bag.metadata.managed_fields}
    for t in range(appliers):
        assert managers.get("applier-%d" % t) == "Apply", managers
    # Replayed from before the writes: exactly the acknowledged ones, in order, as written.
    events = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_secret, ns, resource_version=start, timeout_seconds=20):
        o = ev["object"]
        events.append((int(o.metadata.resource_version), o.metadata.name, dict(o.data)))
        assert ev["type"] == "MODIFIED", (ev["type"], events[-1][:2])
        if len(events) == len(acked):
            w.stop()
    assert events == acked, (len(events), len(acked))


def patch_storm(_v1, ns, n=100):
    uids = ["00000000-0000-4000-8000-%012d" % i for i in range(n)]
    refs = [client.V1OwnerReference(api_version="example.com/v1", kind="Foo", name="owner-%d" % i, uid=u)
            for i, u in enumerate(uids)]
    client.CoreV1Api().create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="test", owner_references=refs)))
    errors, lock = [], threading.Lock()

    def one(i):
        try:
            label, value = "label-%d" % i, "value-%d" % i
            body = {"metadata": {"labels": {label: value},
                                 "ownerReferences": [{"$patch": "delete", "uid": uids[i]}]}}
            got = client.CoreV1Api().patch_namespaced_secret(
                "test", ns, body, _content_type="application/strategic-merge-patch+json")
            assert got.metadata.labels[label] == value, got.metadata.labels
            assert all(r.uid != uids[i] for r in got.metadata.owner_references or []), i
        except BaseException as e:
            with lock:
                errors.append("%d: %r %s" % (i, e, getattr(e, "body", "")))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    final = client.CoreV1Api().read_namespaced_secret("test", ns)
    assert final.metadata.labels == {"label-%d" % i: "value-%d" % i for i in range(n)}, final.metadata.labels
    assert not final.metadata.owner_references, final.metadata.owner_references


def finalizers(_v1, ns, n=10, generated=50):
    v1 = client.CoreV1Api()
    names = ["example.com/f%d" % i for i in range(n)]
    v1.create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="held", finalizers=names)))
    v1.delete_namespaced_secret("held", ns)
    marked = v1.read_namespaced_secret("held", ns)
    assert marked.metadata.deletion_timestamp and marked.metadata.finalizers == names, marked.metadata
    errors, lock, made = [], threading.Lock(), []

    def release(i):
        try:
            body = {"metadata": {"$deleteFromPrimitiveList/finalizers": [names[i]]}}
            client.CoreV1Api().patch_namespaced_secret(
                "held", ns, body, _content_type="application/strategic-merge-patch+json")
        except ApiException as e:
            # None may fail: the object is deleted by the last removal, after every other.
            with lock:
                errors.append("%d: %s %s" % (i, e.status, e.body))

    def generate(i):
        try:
            s = client.CoreV1Api().create_namespaced_secret(
                ns, client.V1Secret(metadata=client.V1ObjectMeta(generate_name="gen-"), string_data={"i": str(i)}))
            with lock:
                made.append(s.metadata.name)
        except BaseException as e:
            with lock:
                errors.append("generate %d: %r %s" % (i, e, getattr(e, "body", "")))

    threads = [threading.Thread(target=release, args=(i,)) for i in range(n)]
    threads += [threading.Thread(target=generate, args=(i,)) for i in range(generated)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    expect_status(lambda: v1.read_namespaced_secret("held", ns), 404)
    assert len(made) == generated and len(set(made)) == generated, made
    assert all(re.match(r"^gen-[a-z0-9]{5}$", m) for m in made), made


def apply_race(_v1, ns, n=4):
    client.CoreV1Api().create_namespaced_secret(
        ns, client.V1Secret(metadata=client.V1ObjectMeta(name="raced"), string_data={"base": "x"}))
    lock = threading.Lock()

    def race(force):
        results = {}

        def one(i):
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "raced"},
                    "data": {"shared": base64.b64encode(("v%d%s" % (i, force)).encode()).decode()}}
            try:
                got = client.CoreV1Api().patch_namespaced_secret(
                    "raced", ns, body, field_manager="racer-%d" % i, force=force or None,
                    _content_type="application/apply-patch+yaml")
                outcome = ("ok", got.data["shared"])
            except ApiException as e:
                outcome = (e.status, json.loads(e.body))
            with lock:
                results[i] = outcome

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    results = race(False)
    won = [i for i, r in results.items() if r[0] == "ok"]
    assert len(won) == 1, results
    for i, r in results.items():
        if i in won:
            continue
        status, body = r
        assert status == 409 and body["reason"] == "Conflict", r
        # An Apply manager is named without "using v1" (kube-apiserver's printManager).
        want = 'Apply failed with 1 conflict: conflict with "racer-%d": .data.shared' % won[0]
        assert body["message"] == want, (body["message"], want)
    results = race(True)
    assert all(r[0] == "ok" for r in results.values()), results
    final = client.CoreV1Api().read_namespaced_secret("raced", ns)
    owners = [m.manager for m in final.metadata.managed_fields
              if m.fields_v1 and "f:shared" in json.dumps(m.fields_v1)]
    assert len(owners) == 1 and owners[0].startswith("racer-"), owners
    i = int(owners[0].split("-")[1])
    assert final.data["shared"] == base64.b64encode(("v%dTrue" % i).encode()).decode(), (owners, final.data)


def raw_secret(v1, ns, name):
    """The Secret's JSON as the server sent it (the client's models would parse the times)."""
    resp = v1.read_namespaced_secret(name, ns, _preload_content=False)
    return json.loads(resp.data)


def times(v1, ns):
    canonical = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="times"), string_data={"a": "one"})
    v1.create_namespaced_secret(ns, body, field_manager="creator")
    v1.patch_namespaced_secret("times", ns, {"metadata": {"labels": {"l": "1"}}}, field_manager="labeler")
    before = {m["manager"]: m["time"] for m in raw_secret(v1, ns, "times")["metadata"]["managedFields"]}
    assert set(before) == {"creator", "labeler"}, before
    time.sleep(1.1)
    live = v1.read_namespaced_secret("times", ns)
    live.data = {"a": "dHdv"}
    sent = client.ApiClient().sanitize_for_serialization(live)["metadata"]
    assert all(m["time"].endswith("+00:00") for m in sent["managedFields"]), sent
    v1.replace_namespaced_secret("times", ns, live, field_manager="replacer")
    after = raw_secret(v1, ns, "times")["metadata"]
    assert canonical.match(after["creationTimestamp"]), after
    got = {m["manager"]: m["time"] for m in after["managedFields"]}
    assert all(canonical.match(t) for t in got.values()), got
    assert got["labeler"] == before["labeler"], (before, got)
    assert got["replacer"] > before["labeler"], (before, got)


MODES = {
    "read": read,
    "expired": expired,
    "write": write,
    "times": times,
    "contend": contend,
    "patch-storm": patch_storm,
    "finalizers": finalizers,
    "apply-race": apply_race,
    "continue-expired": continue_expired,
}


def main():
    kubeconfig, mode = sys.argv[1], sys.argv[2]
    if mode not in MODES:
        raise SystemExit("unknown mode " + mode)
    MODES[mode](api(kubeconfig), *sys.argv[3:])
    print("ok")

if __name__ == "__main__":
    main()
