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
  times NS       read, modify and replace a Secret two managers wrote (the client sends every
                 time it read back with a "+00:00" offset): the times come back as
                 kube-apiserver writes them (whole seconds, "Z"), each manager's unchanged but
                 the replacer's. Leaves Secret "times" in NS.

Prints "ok" on success; any failed check raises.
"""

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


def main():
    kubeconfig, mode = sys.argv[1], sys.argv[2]
    v1 = api(kubeconfig)
    if mode == "read":
        read(v1, sys.argv[3])
    elif mode == "expired":
        expired(v1, sys.argv[3], sys.argv[4])
    elif mode == "write":
        write(v1, sys.argv[3])
    elif mode == "times":
        times(v1, sys.argv[3])
    else:
        raise SystemExit("unknown mode " + mode)
    print("ok")


if __name__ == "__main__":
    main()
