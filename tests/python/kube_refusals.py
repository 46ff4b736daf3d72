"""keyward's Kubernetes API refusing requests as kube-apiserver does, with Python's standard
library only (http.client, ssl): authorization before the body is read, deletecollection
authorized as its own verb and applying its preconditions to every Secret, DeleteOptions
validation, dry-run creates of a name taken, and YAML bodies nested too deep; list and watch
options; and metadata-only answers (PartialObjectMetadata) for metadata clients.

A list or watch that names one Secret (field selector metadata.name=NAME) is authorized with
that name, so that a resourceNames rule allows it; discovery, OpenAPI and paths or resources
nothing serves are authorized as kube-apiserver authorizes them (403 before 404); and every
request is in the audit log AUDIT, with the code it was answered with.

Driven by tests/kube/python.rs:  python3 kube_refusals.py HOST PORT DIR NS AUDIT
DIR holds ca.pem and USER.pem / USER.key for admin (system:masters), nobody (no role),
lister (list and delete Secrets in NS), collector (deletecollection of Secrets in NS) and single
(get, list and watch of Secret a1 alone). Secrets a1, a2, a3 (label g=a) and b1 exist in NS.
Prints "ok" on success; a failed check raises.
"""

import base64
import http.client
import json
import ssl
import sys
import threading
import time

HOST, PORT, DIR, NS, AUDIT = sys.argv[1:6]
PORT = int(PORT)
SECRETS = "/api/v1/namespaces/%s/secrets" % NS
JSON = {"Content-Type": "application/json"}


def connect(user):
    ctx = ssl.create_default_context(cafile=DIR + "/ca.pem")
    ctx.load_cert_chain(DIR + "/%s.pem" % user, DIR + "/%s.key" % user)
    return http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=60)


def call(user, method, path, body=None, headers=None):
    c = connect(user)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, json.loads(data)


def watch(user, path, headers=None):
    """The events of a watch that the server ends after a second."""
    c = connect(user)
    c.request("GET", path + "&watch=true&timeoutSeconds=1", headers=headers or {})
    r = c.getresponse()
    events = [json.loads(line) for line in r.read().splitlines() if line.strip()]
    c.close()
    return r.status, events


def audited(uri):
    """The (stage, code, objectRef name, decision) of the audit events of requests to uri."""
    out = []
    with open(AUDIT) as f:
        for line in f:
            e = json.loads(line)
            if e["requestURI"] == uri:
                out.append((e["stage"], e.get("responseStatus", {}).get("code"),
                            (e.get("objectRef") or {}).get("name"),
                            e["annotations"].get("authorization.k8s.io/decision")))
    return out


def refused(user, method, path, code, reason, message, body=None, headers=None):
    got_code, got = call(user, method, path, body, headers)
    assert (got_code, got.get("kind"), got.get("reason"), got.get("code")) == (code, "Status", reason, code), (
        method, path, got_code, got)
    assert got["message"] == message, (method, path, got["message"], message)
    return got


def names():
    code, got = call("admin", "GET", SECRETS)
    assert code == 200, got
    # As kube-apiserver's, a list's items carry no kind or apiVersion of their own.
    assert all("kind" not in i and "apiVersion" not in i for i in got["items"]), got
    return sorted(i["metadata"]["name"] for i in got["items"])


def forbidden(user, verb, name=None):
    what = 'secrets "%s"' % name if name else "secrets"
    return '%s is forbidden: User "%s" cannot %s resource "secrets" in API group "" in the namespace "%s"' % (
        what, user, verb, NS)


ALL = ["a1", "a2", "a3", "b1"]
assert names() == ALL, names()

# Authorization comes before the body and the options are read: a caller without the
# permission gets 403 whatever it sent, even a body the parser would take long over.
deep = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: deep\n  annotations: " + "[" * 100000 + "]" * 100000
refused("nobody", "POST", SECRETS, 403, "Forbidden", forbidden("nobody", "create"),
        body=deep, headers={"Content-Type": "application/yaml"})
refused("nobody", "POST", SECRETS, 403, "Forbidden", forbidden("nobody", "create"), body="{bad", headers=JSON)
refused("nobody", "PUT", SECRETS + "/a1", 403, "Forbidden", forbidden("nobody", "update", "a1"),
        body="{bad", headers=JSON)
refused("nobody", "PATCH", SECRETS + "/a1", 403, "Forbidden", forbidden("nobody", "patch", "a1"),
        body="{bad", headers={"Content-Type": "application/merge-patch+json"})
refused("nobody", "DELETE", SECRETS + "/a1", 403, "Forbidden", forbidden("nobody", "delete", "a1"),
        body="{bad", headers=JSON)
refused("nobody", "DELETE", SECRETS + "?labelSelector=%3D%3D", 403, "Forbidden",
        forbidden("nobody", "deletecollection"))


def audited_id(audit_id):
    """The (stage, code, decision) of the audit events of the request with this Audit-ID."""
    with open(AUDIT) as f:
        events = [json.loads(line) for line in f]
    return [(e["stage"], e.get("responseStatus", {}).get("code"),
             e["annotations"].get("authorization.k8s.io/decision"))
            for e in events if e.get("auditID") == audit_id]


# A body too large is the handler's answer too: after authentication and authorization, and
# recorded (kube-apiserver's handler reads the body).
big = "x" * (4 << 20)
refused("nobody", "POST", SECRETS, 403, "Forbidden", forbidden("nobody", "create"), body=big,
        headers=dict(JSON, **{"Audit-ID": "big-nobody"}))
refused("admin", "POST", SECRETS, 413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728",
        body=big, headers=dict(JSON, **{"Audit-ID": "big-admin"}))
assert audited_id("big-nobody") == [("RequestReceived", None, None), ("ResponseComplete", 403, "forbid")], \
    audited_id("big-nobody")
assert audited_id("big-admin") == [("RequestReceived", None, None), ("ResponseComplete", 413, "allow")], \
    audited_id("big-admin")

# Impersonating a group without a user: kube-apiserver's plain-text 500 (InternalError), before
# authorization, recorded with its code alone.
c = connect("admin")
c.request("GET", SECRETS + "/a1", headers={"Impersonate-Group": "ops", "Audit-ID": "imp-no-user"})
r = c.getresponse()
got = (r.status, r.getheader("Content-Type"), r.read().decode())
c.close()
assert got == (500, "text/plain; charset=utf-8",
               'Internal Server Error: "%s/a1": requested [{Group  ops    }] without impersonating a user\n'
               % SECRETS), got
assert audited_id("imp-no-user") == [("RequestReceived", None, None), ("ResponseComplete", 500, None)], \
    audited_id("imp-no-user")

# The same bodies from a caller who may write are refused for what they are.
refused("admin", "POST", SECRETS, 400, "BadRequest",
        "error converting YAML to JSON: yaml: exceeded max depth of 1000",
        body=deep, headers={"Content-Type": "application/yaml"})
apply = {"Content-Type": "application/apply-patch+yaml"}
refused("admin", "PATCH", SECRETS + "/deep?fieldManager=t", 400, "BadRequest",
        "error converting YAML to JSON: yaml: exceeded max depth of 1000", body=deep, headers=apply)

# deletecollection is its own verb: list and delete do not grant it, and it alone suffices.
refused("lister", "DELETE", SECRETS, 403, "Forbidden", forbidden("lister", "deletecollection"))
assert names() == ALL, names()

# Its preconditions apply to every Secret: one that does not hold refuses that Secret and stops.
code, got = call("collector", "DELETE", SECRETS + "?labelSelector=g%3Da",
                 body=json.dumps({"preconditions": {"uid": "nope"}}), headers=JSON)
assert (code, got["reason"]) == (409, "Conflict"), (code, got)
assert got["message"].startswith(
    'Operation cannot be fulfilled on Secret "a1": the UID in the precondition (nope) does not match the UID in record ('), got
assert names() == ALL, names()
code, got = call("collector", "DELETE", SECRETS + "?labelSelector=g%3Da&dryRun=All",
                 body=json.dumps({"preconditions": {"resourceVersion": "1"}}), headers=JSON)
assert (code, got["reason"]) == (409, "Conflict"), (code, got)
assert got["message"].startswith('Operation cannot be fulfilled on Secret "a1": the ResourceVersion in the precondition (1) '
                                 'does not match the ResourceVersion in record ('), got
assert got["message"].endswith("). The object might have been modified"), got
code, a2 = call("admin", "GET", SECRETS + "/a2")
code, got = call("collector", "DELETE", SECRETS + "?fieldSelector=metadata.name%3Da2",
                 body=json.dumps({"preconditions": {"uid": a2["metadata"]["uid"]}}), headers=JSON)
assert code == 200 and [i["metadata"]["name"] for i in got["items"]] == ["a2"], (code, got)
assert names() == ["a1", "a3", "b1"], names()

# DeleteOptions: orphanDependents and propagationPolicy together are refused, nothing deleted.
both = json.dumps({"propagationPolicy": "Foreground", "orphanDependents": True})
refused("admin", "DELETE", SECRETS + "/a1", 422, "Invalid",
        'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Invalid value: "Foreground": '
        "orphanDependents and deletionPropagation cannot be both set", body=both, headers=JSON)
assert names() == ["a1", "a3", "b1"], names()

# A dry-run create of a name taken is AlreadyExists, as the real create would be.
body = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b1"}})
refused("admin", "POST", SECRETS + "?dryRun=All", 409, "AlreadyExists", 'secrets "b1" already exists',
        body=body, headers=JSON)
body = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "new"}})
code, got = call("admin", "POST", SECRETS + "?dryRun=All", body=body, headers=JSON)
assert code == 201 and got["metadata"]["name"] == "new", (code, got)
assert names() == ["a1", "a3", "b1"], names()
# A JSON patch that does not apply: kube-apiserver's fixed 422, empty details; nothing changes.
code, b1 = call("admin", "GET", SECRETS + "/b1")
code, got = call("admin", "PATCH", SECRETS + "/b1", body=json.dumps([{"op": "test", "path": "/data/k", "value": "WRONG"}]),
                 headers={"Content-Type": "application/json-patch+json"})
assert (code, got) == (422, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": "the server rejected our request due to an error in our request",
                             "reason": "Invalid", "details": {}, "code": 422}), (code, got)

# An update or patch whose object has no name (or loses it) is refused as checkName does.
undeterminable = "the name of the object (b1 based on URL) was undeterminable: name must be provided"
refused("admin", "PUT", SECRETS + "/b1", 400, "BadRequest", undeterminable,
        body=json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {}}), headers=JSON)
refused("admin", "PATCH", SECRETS + "/b1", 400, "BadRequest", undeterminable,
        body=json.dumps({"metadata": {"name": None}}), headers={"Content-Type": "application/merge-patch+json"})
refused("admin", "PATCH", SECRETS + "/b1", 400, "BadRequest", undeterminable,
        body=json.dumps([{"op": "remove", "path": "/metadata"}]), headers={"Content-Type": "application/json-patch+json"})
refused("admin", "PATCH", SECRETS + "/b1", 400, "BadRequest", undeterminable,
        body=json.dumps({"$patch": "delete"}), headers={"Content-Type": "application/strategic-merge-patch+json"})
refused("admin", "PATCH", SECRETS + "/b1", 400, "BadRequest",
        "the namespace of the object (other) does not match the namespace on the request (%s)" % NS,
        body=json.dumps({"metadata": {"namespace": "other"}}), headers={"Content-Type": "application/merge-patch+json"})
# A map directive other than replace or delete is strategicpatch's ErrBadPatchType, which
# kube-apiserver passes on as a 500 without a reason (the map it prints is left out here).
code, got = call("admin", "PATCH", SECRETS + "/b1", json.dumps({"data": {"$patch": "merge", "k": "c2VjcmV0"}}),
                 {"Content-Type": "application/strategic-merge-patch+json"})
assert (code, got.get("reason"), got["message"]) == (
    500, None, "unknown patch type: merge in map: <redacted>"), (code, got)
# An update's own rules come first, then those of any Secret (ValidateSecretUpdate's order).
refused("admin", "PATCH", SECRETS + "/b1", 422, "Invalid",
        'Secret "b1" is invalid: [type: Invalid value: "kubernetes.io/tls": field is immutable, '
        "data[tls.crt]: Required value, data[tls.key]: Required value]",
        body=json.dumps({"type": "kubernetes.io/tls"}), headers={"Content-Type": "application/merge-patch+json"})
code, after = call("admin", "GET", SECRETS + "/b1")
assert after == b1, (b1, after)

# Nothing is stored under a name that is not valid: a read, change or delete of it is NotFound
# (after authorization), as kube-apiserver answers; only a create checks the name.
for method in ("GET", "DELETE", "PUT"):
    body = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "Bad_Name"}}) if method == "PUT" else None
    refused("admin", method, SECRETS + "/Bad_Name", 404, "NotFound", 'secrets "Bad_Name" not found', body=body, headers=JSON)
refused("admin", "GET", "/api/v1/namespaces/Bad_NS/secrets/x", 404, "NotFound", 'secrets "x" not found')
refused("nobody", "GET", SECRETS + "/Bad_Name", 403, "Forbidden", forbidden("nobody", "get", "Bad_Name"))
# Output negotiation comes after authorization: a caller without the permission gets 403.
refused("nobody", "GET", SECRETS + "/a1", 403, "Forbidden", forbidden("nobody", "get", "a1"), headers={"Accept": "text/html"})
refused("nobody", "GET", SECRETS, 403, "Forbidden", forbidden("nobody", "list"), headers={"Accept": "text/html"})
# A list, watch or deletecollection in a namespace that is not valid finds nothing (200, an
# empty list), as kube-apiserver, which checks a namespace only when it stores an object; a
# create there is NotFound for the namespace (NamespaceLifecycle admission, which runs before
# the Secret's validation), a server-side apply that would create too. Each is authorized first.
before = names()
for method in ("GET", "DELETE"):
    code, got = call("admin", method, "/api/v1/namespaces/Bad_NS/secrets")
    assert code == 200 and got["kind"] == "SecretList" and got["items"] == [], (method, code, got)
    assert int(got["metadata"]["resourceVersion"]) > 0, got
ctx = ssl.create_default_context(cafile=DIR + "/ca.pem")
ctx.load_cert_chain(DIR + "/admin.pem", DIR + "/admin.key")
c = http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=60)
c.request("GET", "/api/v1/namespaces/Bad_NS/secrets?watch=true&timeoutSeconds=1")
r = c.getresponse()
assert (r.status, r.read()) == (200, b""), r.status
c.close()
refused("nobody", "GET", "/api/v1/namespaces/Bad_NS/secrets", 403, "Forbidden",
        'secrets is forbidden: User "nobody" cannot list resource "secrets" in API group "" in the namespace "Bad_NS"')
for dry in ("", "?dryRun=All"):
    got = refused("admin", "POST", "/api/v1/namespaces/Bad_NS/secrets" + dry, 404, "NotFound",
                  'namespaces "Bad_NS" not found',
                  body=json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}), headers=JSON)
    assert got["details"] == {"name": "Bad_NS", "kind": "namespaces"}, got
refused("nobody", "POST", "/api/v1/namespaces/Bad_NS/secrets", 403, "Forbidden",
        'secrets is forbidden: User "nobody" cannot create resource "secrets" in API group "" in the namespace "Bad_NS"',
        body=json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}), headers=JSON)
got = refused("admin", "PATCH", "/api/v1/namespaces/Bad_NS/secrets/x?fieldManager=t", 404, "NotFound",
              'namespaces "Bad_NS" not found',
              body=json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
              headers={"Content-Type": "application/apply-patch+yaml"})
assert names() == before, (before, names())
# A list's resourceVersion and resourceVersionMatch, as ValidateListOptions checks them.
list_invalid = 'ListOptions.meta.k8s.io "" is invalid: '
refused("admin", "GET", SECRETS + "?resourceVersionMatch=Exact", 422, "Invalid",
        list_invalid + "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided")
refused("admin", "GET", SECRETS + "?resourceVersion=1&resourceVersionMatch=Bogus", 422, "Invalid",
        list_invalid + 'resourceVersionMatch: Unsupported value: "Bogus": supported values: "Exact", "NotOlderThan", ""')
refused("admin", "GET", SECRETS + "?resourceVersion=0&resourceVersionMatch=Exact", 422, "Invalid",
        list_invalid + 'resourceVersionMatch: Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"')
# Exactly at a past revision: a2, deleted since, is there; b1, created after, is not.
code, a3 = call("admin", "GET", SECRETS + "/a3")
code, got = call("admin", "GET", SECRETS + "?resourceVersionMatch=Exact&resourceVersion=" + a3["metadata"]["resourceVersion"])
assert code == 200, got
assert [i["metadata"]["name"] for i in got["items"]] == ["a1", "a2", "a3"], got
assert got["metadata"]["resourceVersion"] == a3["metadata"]["resourceVersion"], got
code, now = call("admin", "GET", SECRETS)
current = int(now["metadata"]["resourceVersion"])
code, got = call("admin", "GET", SECRETS + "?resourceVersionMatch=NotOlderThan&resourceVersion=" + a3["metadata"]["resourceVersion"])
assert code == 200 and got["metadata"]["resourceVersion"] == str(current), got
# One Secret at a resourceVersion is read "not older than" it, as from kube-apiserver's watch
# cache: the current version once the store has reached it, else the same 504.
code, got = call("admin", "GET", SECRETS + "/a3?resourceVersion=" + a3["metadata"]["resourceVersion"])
assert code == 200 and got["metadata"] == a3["metadata"], got
got = refused("admin", "GET", SECRETS + "/a3?resourceVersion=%d" % (current + 1000), 504, "Timeout",
              "Timeout: Too large resource version: %d, current: %d" % (current + 1000, current))
assert audited(SECRETS + "/a3?resourceVersion=%d" % (current + 1000))[-1][:2] == ("ResponseComplete", 504)
# A revision the store has not reached: 504 Timeout, as kube-apiserver's ResourceVersionTooLarge.
far = current + 1000
for match in ("NotOlderThan", "Exact"):
    got = refused("admin", "GET", SECRETS + "?resourceVersionMatch=%s&resourceVersion=%d" % (match, far), 504, "Timeout",
                  "Timeout: Too large resource version: %d, current: %d" % (far, current))
    assert got["details"] == {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                              "retryAfterSeconds": 1}, got
    # The audit log records what the client was told, not what the store's read returned.
    uri = SECRETS + "?resourceVersionMatch=%s&resourceVersion=%d" % (match, far)
    assert audited(uri)[-1][:2] == ("ResponseComplete", 504), audited(uri)
    with open(AUDIT) as f:
        last = [json.loads(line) for line in f if json.loads(line)["requestURI"] == uri][-1]
    assert last["responseStatus"]["message"] == got["message"], last
# A read "not older than" a revision the store reaches within three seconds waits for it and
# succeeds, as from kube-apiserver's watch cache: a write made a second after the read began.
code, now = call("admin", "GET", SECRETS)
ahead = int(now["metadata"]["resourceVersion"]) + 1
def write_soon():
    time.sleep(1)
    made, body = call("admin", "POST", SECRETS, json.dumps(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "waited-for"}}), JSON)
    assert made == 201, body
writer = threading.Thread(target=write_soon)
writer.start()
started = time.monotonic()
code, got = call("admin", "GET", SECRETS + "?resourceVersionMatch=NotOlderThan&resourceVersion=%d" % ahead)
waited = time.monotonic() - started
writer.join()
assert code == 200 and int(got["metadata"]["resourceVersion"]) >= ahead, got
assert "waited-for" in [i["metadata"]["name"] for i in got["items"]], got
assert waited >= 0.5, waited
assert call("admin", "DELETE", SECRETS + "/waited-for")[0] == 200
# Continue tokens: not with a resourceVersion, and only those the server handed out.
code, page = call("admin", "GET", SECRETS + "?limit=1")
token = page["metadata"]["continue"]
refused("admin", "GET", SECRETS + "?limit=1&resourceVersion=1&continue=" + token, 400, "BadRequest",
        "specifying resource version is not allowed when using continue")
refused("admin", "GET", SECRETS + "?limit=1&continue=garbage", 400, "BadRequest",
        "invalid continue token: continue key is not valid: invalid character '\\u0081' looking for beginning of value")
# kube-apiserver's token (storage.EncodeContinue): the key relative to the list's prefix.
rv = int(page["metadata"]["resourceVersion"])
first = page["items"][0]["metadata"]["name"]
assert json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) == \
    {"v": "meta.k8s.io/v1", "rv": rv, "start": first + "\u0000"}, token
assert "=" not in token, token
def crafted(**fields):
    body = dict({"v": "meta.k8s.io/v1", "rv": rv, "start": first + "\u0000"}, **fields)
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
# Its checks (storage.DecodeContinue): no path that path.Clean changes, so that a list never
# ranges outside its prefix; a revision and a start key; the one version.
for fields, why in (({"start": "../zz/"}, ": ../zz/"), ({"start": "a//b"}, ": a//b"), ({"start": "a/./b"}, ": a/./b"),
                    ({"rv": 0}, ": incorrect encoded start resourceVersion (version meta.k8s.io/v1)"),
                    ({"start": ""}, ": encoded start key empty (version meta.k8s.io/v1)"),
                    ({"v": "v9"}, ": server does not recognize this encoded version v9"),
                    ({"rv": str(rv)}, ": json: cannot unmarshal string into Go struct field continueToken.rv of type int64")):
    refused("admin", "GET", SECRETS + "?limit=1&continue=" + crafted(**fields), 400, "BadRequest",
            "invalid continue token: continue key is not valid" + why)
# Go's base64.RawURLEncoding: the first byte it cannot use (a symbol left over, or padding).
for token, at in (("ab$c", 2), ("abcde", 4), ("abc=", 3)):
    refused("admin", "GET", SECRETS + "?limit=1&continue=" + token, 400, "BadRequest",
            "invalid continue token: continue key is not valid: illegal base64 data at input byte %d" % at)
# A start key with or without its leading slash is the same key.
code, got = call("admin", "GET", SECRETS + "?limit=1&continue=" + crafted(start="/" + first + "\u0000"))
assert code == 200 and got["items"][0]["metadata"]["name"] != first, got
# Pages as kube-apiserver's storage reads them: a page at a revision without a match rule is
# read exactly at it (a2, deleted since, is on it); resourceVersion=0 is served whole from its
# watch cache, limit ignored; a limit below 1 is no limit.
at_a3 = a3["metadata"]["resourceVersion"]
code, got = call("admin", "GET", SECRETS + "?limit=10&resourceVersion=" + at_a3)
assert code == 200 and [i["metadata"]["name"] for i in got["items"]] == ["a1", "a2", "a3"], got
assert got["metadata"]["resourceVersion"] == at_a3, got
everything = names()
for q in ("?limit=1&resourceVersion=0", "?limit=-1", "?limit=0"):
    code, got = call("admin", "GET", SECRETS + q)
    assert code == 200 and sorted(i["metadata"]["name"] for i in got["items"]) == everything, (q, got)
    assert "continue" not in got["metadata"], (q, got)
# Integers and booleans decode as its parameter codec decodes them: Go's errors; a boolean is
# true unless 0 or false (the empty value too), and a parameter's first value counts.
refused("admin", "GET", SECRETS + "?limit=abc", 400, "BadRequest", 'strconv.ParseInt: parsing "abc": invalid syntax')
refused("admin", "GET", SECRETS + "?timeoutSeconds=", 400, "BadRequest", 'strconv.ParseInt: parsing "": invalid syntax')
refused("admin", "GET", SECRETS + "?limit=99999999999999999999", 400, "BadRequest",
        'strconv.ParseInt: parsing "99999999999999999999": value out of range')
for q in ("?watch=&timeoutSeconds=1", "?watch=yes&timeoutSeconds=1", "?watch=1&watch=false&timeoutSeconds=1"):
    c = connect("admin")
    c.request("GET", SECRETS + q)
    r = c.getresponse()
    body = r.read()
    c.close()
    assert r.status == 200 and b'"type":"ADDED"' in body, (q, r.status, body[:300])
# Watch options as kube-apiserver 1.30 (the version /version reports) checks them: without its
# WatchList gate, sendInitialEvents is refused, and client-go falls back to list and watch.
refused("admin", "GET", SECRETS + "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", 422, "Invalid",
        list_invalid + "sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")
refused("admin", "GET", SECRETS + "?watch=true&resourceVersionMatch=Exact", 422, "Invalid",
        list_invalid + '[resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided, '
        'resourceVersionMatch: Unsupported value: "Exact": supported values: "NotOlderThan"]')
# Reads are authorized before their options are read, too.
refused("nobody", "GET", SECRETS + "?labelSelector=%3D%3D", 403, "Forbidden", forbidden("nobody", "list"))
refused("nobody", "GET", SECRETS + "?watch=true&resourceVersionMatch=Exact", 403, "Forbidden", forbidden("nobody", "watch"))
# Write options: fieldValidation's supported values as kube-apiserver lists them (sorted, with
# ""), and a fieldManager of printable characters only.
body = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "opts"}})
refused("admin", "POST", SECRETS + "?fieldValidation=bogus", 422, "Invalid",
        'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "bogus": '
        'supported values: "", "Ignore", "Strict", "Warn"', body=body, headers=JSON)
refused("admin", "POST", SECRETS + "?fieldManager=a%01b", 422, "Invalid",
        'CreateOptions.meta.k8s.io "" is invalid: fieldManager: Invalid value: "a\\x01b": '
        "invalid character U+0001 (at position 1)", body=body, headers=JSON)
assert "opts" not in names(), names()
# Label selectors with upstream's integer comparisons (a bound is a label value too, so not
# negative); `()` is the set of the empty value; a selector that does not parse is upstream's 400.
code, got = call("admin", "PATCH", SECRETS + "/a1", body=json.dumps({"metadata": {"labels": {"n": "7"}}}),
                 headers={"Content-Type": "application/merge-patch+json"})
assert code == 200, got
for selector, want in (("n%3E5", ["a1"]), ("n%3C5", []), ("n%3E0,g%3Da", ["a1"]), ("n%20in%20()", []),
                       ("n%20notin%20(),g%3Da", ["a1", "a3"])):
    code, got = call("admin", "GET", SECRETS + "?labelSelector=" + selector)
    assert code == 200 and [i["metadata"]["name"] for i in got["items"]] == want, (selector, got)
refused("admin", "GET", SECRETS + "?labelSelector=g%20a", 400, "BadRequest",
        "unable to parse requirement: found 'a', expected: in, notin, =, ==, !=, gt, lt")
refused("admin", "GET", SECRETS + "?labelSelector=g%3Da%20b", 400, "BadRequest",
        "found 'b', expected: ',' or 'end of string'")
code, got = call("admin", "GET", SECRETS + "?labelSelector=n%3E-1")
assert (code, got["reason"]) == (400, "BadRequest"), got
assert got["message"].startswith('unable to parse requirement: values[0][n]: Invalid value: "-1": a valid label'), got
# A metadata client (client-go's metadata informer) asks for PartialObjectMetadata, protobuf
# first: get, list and watch answer in JSON with the metadata alone, never a value.
META = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1," \
       "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
META_LIST = META.replace("as=PartialObjectMetadata;", "as=PartialObjectMetadataList;")
code, got = call("admin", "GET", SECRETS + "/a1", headers={"Accept": META})
assert code == 200 and (got["kind"], got["apiVersion"]) == ("PartialObjectMetadata", "meta.k8s.io/v1"), got
assert set(got) == {"kind", "apiVersion", "metadata"} and got["metadata"]["name"] == "a1", got
assert got["metadata"]["labels"] == {"g": "a", "n": "7"} and got["metadata"]["managedFields"], got
code, got = call("admin", "GET", SECRETS + "?labelSelector=g%3Da", headers={"Accept": META_LIST})
assert code == 200 and (got["kind"], got["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1"), got
assert [(i["kind"], i["metadata"]["name"]) for i in got["items"]] == [("PartialObjectMetadata", "a1"), ("PartialObjectMetadata", "a3")], got
assert all(set(i) == {"kind", "apiVersion", "metadata"} for i in got["items"]) and got["metadata"]["resourceVersion"], got
ctx = ssl.create_default_context(cafile=DIR + "/ca.pem")
ctx.load_cert_chain(DIR + "/admin.pem", DIR + "/admin.key")
c = http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=60)
c.request("GET", SECRETS + "?watch=true&timeoutSeconds=1&labelSelector=g%3Da", headers={"Accept": META})
events = [json.loads(line) for line in c.getresponse().read().splitlines() if line.strip()]
c.close()
assert [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"]) for e in events] == [
    ("ADDED", "PartialObjectMetadata", "a1"), ("ADDED", "PartialObjectMetadata", "a3")], events
assert all("data" not in e["object"] for e in events), events

# resourceNames allow a list or watch only of the one Secret they name, and only when the
# request names it (field selector metadata.name), as kube-apiserver authorizes from the URL.
one = SECRETS + "?fieldSelector=metadata.name%3Da1"
code, got = call("single", "GET", one)
assert code == 200 and [i["metadata"]["name"] for i in got["items"]] == ["a1"], (code, got)
code, got = call("single", "GET", one + "%2Ctype%3DOpaque")
assert code == 200 and [i["metadata"]["name"] for i in got["items"]] == ["a1"], (code, got)
refused("single", "GET", SECRETS, 403, "Forbidden", forbidden("single", "list"))
refused("single", "GET", SECRETS + "?fieldSelector=metadata.name%3Da3", 403, "Forbidden",
        forbidden("single", "list", "a3"))
refused("single", "GET", SECRETS + "?fieldSelector=metadata.name%21%3Da3", 403, "Forbidden",
        forbidden("single", "list"))
# Options that do not decode name nothing: refused as a list of all.
refused("single", "GET", one + "&limit=x", 403, "Forbidden", forbidden("single", "list"))
code, events = watch("single", one)
assert code == 200 and [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a1")], events
refused("single", "GET", SECRETS + "?watch=true", 403, "Forbidden", forbidden("single", "watch"))
refused("single", "GET", SECRETS + "?watch=1&fieldSelector=metadata.name%3Db1", 403, "Forbidden",
        forbidden("single", "watch", "b1"))
# The deprecated watch paths, which kube-apiserver still serves: a GET of them is a watch
# whatever `watch` says, and a name in the path is authorized and selected as that Secret.
WATCH = "/api/v1/watch/namespaces/%s/secrets" % NS
code, events = watch("single", WATCH + "/a1?watch=false")
assert code == 200 and [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a1")], events
code, events = watch("single", WATCH + "/a1?fieldSelector=metadata.name%3Da1%2Ctype%3DOpaque")
assert code == 200 and [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a1")], events
refused("single", "GET", WATCH + "?timeoutSeconds=1", 403, "Forbidden", forbidden("single", "watch"))
refused("single", "GET", WATCH + "/b1?timeoutSeconds=1", 403, "Forbidden", forbidden("single", "watch", "b1"))
refused("single", "GET", WATCH + "/a1?fieldSelector=metadata.name%3Da3", 400, "BadRequest",
        "fieldSelector metadata.name doesn't match requested name")
refused("single", "GET", WATCH + "/a1?fieldSelector=type%3DOpaque", 400, "BadRequest",
        "fieldSelector metadata.name doesn't match requested name")
code, events = watch("admin", WATCH + "?labelSelector=g%3Da")
assert code == 200 and [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
    ("ADDED", "a1"), ("ADDED", "a3")], events
code, events = watch("admin", "/api/v1/watch/secrets?fieldSelector=metadata.name%3Db1")
assert code == 200 and [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "b1")], events
assert audited(WATCH + "/a1?watch=false&watch=true&timeoutSeconds=1")[:2] == [
    ("RequestReceived", None, "a1", None), ("ResponseStarted", 200, "a1", "allow")], \
    audited(WATCH + "/a1?watch=false&watch=true&timeoutSeconds=1")
# A field selector a list cannot use is the caller's 400 once the name authorized it.
refused("single", "GET", one + "%2Cspec.x%3Dy", 400, "BadRequest", "field label not supported: spec.x")
assert audited(one) == [("RequestReceived", None, "a1", None), ("ResponseComplete", 200, "a1", "allow")], audited(one)

# Discovery and everything else are authorized too: system:discovery lets every authenticated
# user read discovery and OpenAPI; other paths and resources nothing serves are 403 for a user
# without a rule, 404 for one allowed.
code, got = call("nobody", "GET", "/api")
assert code == 200 and got["kind"] == "APIVersions", got
code, got = call("nobody", "GET", "/openapi/v3")
assert code == 200 and "paths" in got, got
refused("nobody", "GET", "/nope", 403, "Forbidden", 'forbidden: User "nobody" cannot get path "/nope"')
refused("nobody", "POST", "/api", 403, "Forbidden", 'forbidden: User "nobody" cannot post path "/api"')
refused("nobody", "GET", "/api/v1/namespaces/%s/configmaps" % NS, 403, "Forbidden",
        'configmaps is forbidden: User "nobody" cannot list resource "configmaps" in API group "" in the namespace "%s"' % NS)
refused("nobody", "GET", "/apis/apps/v1/deployments", 403, "Forbidden",
        'deployments.apps is forbidden: User "nobody" cannot list resource "deployments" in API group "apps" at the cluster scope')
refused("admin", "GET", "/nope", 404, "NotFound", "the server could not find the requested resource")
refused("admin", "GET", "/api/v1/namespaces/%s/configmaps" % NS, 404, "NotFound",
        "the server could not find the requested resource")

# A watch cannot be written as YAML: 406 naming the stream media types (in YAML, as asked);
# asking for YAML's stream form skips it.
c = connect("admin")
c.request("GET", SECRETS + "?watch=true&timeoutSeconds=1", headers={"Accept": "application/yaml"})
r = c.getresponse()
body = r.read().decode()
c.close()
assert r.status == 406 and r.getheader("Content-Type") == "application/yaml", (r.status, body)
# (go-yaml v2's layout: single quotes for a string with ": ", folded past column 80.)
assert "\nmessage: 'only the following media types are accepted: application/json;stream=watch,\n" \
       "  application/vnd.kubernetes.protobuf;stream=watch'\n" in body, body
code, events = watch("admin", SECRETS + "?labelSelector=g%3Da", headers={"Accept": "application/yaml;stream=watch, application/json"})
assert code == 200 and [e["object"]["metadata"]["name"] for e in events] == ["a1", "a3"], events

# objectRef.apiVersion is the version the request names.
review = "/apis/authentication.k8s.io/v1beta1/selfsubjectreviews"
code, got = call("nobody", "POST", review, body=json.dumps(
    {"apiVersion": "authentication.k8s.io/v1beta1", "kind": "SelfSubjectReview"}), headers=JSON)
assert code == 201 and got["status"]["userInfo"]["username"] == "nobody", (code, got)
with open(AUDIT) as f:
    refs = [json.loads(line)["objectRef"] for line in f if review in line]
assert refs and all((r["apiGroup"], r["apiVersion"]) == ("authentication.k8s.io", "v1beta1") for r in refs), refs

# A refused credential is recorded as kube-apiserver records it: what was asked, no user, 401.
ctx = ssl.create_default_context(cafile=DIR + "/ca.pem")
c = http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=60)
c.request("GET", SECRETS + "?limit=7", headers={"Authorization": "Bearer not-a-token"})
r = c.getresponse()
assert r.status == 401, (r.status, r.read())
r.read()
c.close()
with open(AUDIT) as f:
    unauthenticated = [json.loads(line) for line in f if (SECRETS + "?limit=7") in line]
assert [(e["stage"], e["verb"], e["user"], e["responseStatus"]["code"], e["responseStatus"]["message"],
         e["objectRef"]["resource"], e["objectRef"]["namespace"]) for e in unauthenticated] == [
    ("ResponseStarted", "list", {}, 401, "Authentication failed, attempted: bearer", "secrets", NS)], unauthenticated

# Every request is in the audit log with the code it was answered with: those answered or
# refused by the front end alone (discovery, 404, 400, 406, 403 before the handler) too.
# RequestReceived is written before the request is authorized, as kube-apiserver writes it: no
# decision yet.
assert audited("/api") == [("RequestReceived", None, None, None), ("ResponseComplete", 200, None, "allow"),
                           ("RequestReceived", None, None, None), ("ResponseComplete", 403, None, "forbid")], audited("/api")
assert [a[1] for a in audited("/nope")] == [None, 403, None, 404], audited("/nope")
# A watch is long-running: its answer starts (ResponseStarted) also when it is an error.
assert audited(SECRETS + "?watch=true&timeoutSeconds=1")[-3:] == [
    ("RequestReceived", None, None, None), ("ResponseStarted", 406, None, "allow"),
    ("ResponseComplete", 406, None, "allow")], audited(SECRETS + "?watch=true&timeoutSeconds=1")
assert [a[1] for a in audited(SECRETS + "?limit=1&continue=garbage")] == [None, 400], audited(SECRETS + "?limit=1&continue=garbage")
assert [a[1] for a in audited(SECRETS + "?resourceVersionMatch=Exact")] == [None, 422], audited(SECRETS + "?resourceVersionMatch=Exact")
assert [a[1:] for a in audited(SECRETS + "/a1")][:2] == [(None, "a1", None), (403, "a1", "forbid")], audited(SECRETS + "/a1")

# A patch that leaves data that is not base64 is kube-apiserver's 422 on "patch" (the value,
# which holds Secret values, is not repeated); a strategic merge patch's error is in its
# unstructured converter's words.
unrecognized = "the object provided is unrecognized (must be of type Secret): couldn't get version/kind; json parse error: "
for ctype, patch, why in (
        ("application/strategic-merge-patch+json", {"data": {"k": "!!!"}}, "error decoding from json: illegal base64 data at input byte 0"),
        ("application/merge-patch+json", {"data": {"k": "!!!"}}, "illegal base64 data at input byte 0"),
        ("application/json-patch+json", [{"op": "add", "path": "/data", "value": {"k": "!!!"}}], "illegal base64 data at input byte 0")):
    got = refused("admin", "PATCH", SECRETS + "/a1", 422, "Invalid",
                  ' "" is invalid: patch: Invalid value: "<redacted>": ' + why, json.dumps(patch), {"Content-Type": ctype})
    assert got["details"] == {"causes": [{"reason": "FieldValueInvalid", "field": "patch",
                                          "message": 'Invalid value: "<redacted>": ' + why}]}, got
# Unknown fields a patch leaves under fieldValidation=Strict (what kubectl edit sends) are the
# same 422 (kube-apiserver's patch handler), so that kubectl edit reopens the editor with the
# error; under Warn the patch is applied with one warning per field.
strict = 'strict decoding error: unknown field "bogus", unknown field "metadata.foo"'
for ctype, patch in (
        ("application/strategic-merge-patch+json", {"metadata": {"foo": 1}, "bogus": 1}),
        ("application/merge-patch+json", {"metadata": {"foo": 1}, "bogus": 1}),
        ("application/json-patch+json", [{"op": "add", "path": "/bogus", "value": 1},
                                         {"op": "add", "path": "/metadata/foo", "value": 1}])):
    got = refused("admin", "PATCH", SECRETS + "/a1?fieldValidation=Strict", 422, "Invalid",
                  ' "" is invalid: patch: Invalid value: "<redacted>": ' + strict, json.dumps(patch), {"Content-Type": ctype})
    assert got["details"] == {"causes": [{"reason": "FieldValueInvalid", "field": "patch",
                                          "message": 'Invalid value: "<redacted>": ' + strict}]}, got
# Duplicate keys in the patch itself come first (the patch's own strict decode), then what the
# patched object leaves unknown; a JSON patch's come from its operations, prefixed "json patch".
for ctype, raw, why in (
        ("application/strategic-merge-patch+json", '{"data":{"k":"eA==","k":"eQ=="},"bogus":1}',
         'duplicate field "data.k", unknown field "bogus"'),
        ("application/merge-patch+json", '{"data":{"k":"eA==","k":"eQ=="},"bogus":1}',
         'duplicate field "data.k", unknown field "bogus"'),
        ("application/json-patch+json", '[{"op":"add","op":"add","path":"/bogus","value":{"a":1,"a":2},"x":1}]',
         'json patch duplicate field "[0].op", json patch duplicate field "[0].value.a", '
         'json patch unknown field "[0].x", unknown field "bogus"')):
    refused("admin", "PATCH", SECRETS + "/a1?fieldValidation=Strict", 422, "Invalid",
            ' "" is invalid: patch: Invalid value: "<redacted>": strict decoding error: ' + why,
            raw, {"Content-Type": ctype})
code, got = call("admin", "GET", SECRETS + "/a1")
assert code == 200 and "bogus" not in got and got["data"] == {"k": "dg=="}, got
# Under Ignore the last of the duplicates wins, as in Go.
code, got = call("admin", "PATCH", SECRETS + "/a1?fieldValidation=Ignore", '{"data":{"dup":"eA==","dup":"eQ=="}}',
                 {"Content-Type": "application/merge-patch+json"})
assert code == 200 and got["data"]["dup"] == "eQ==", (code, got)
code, got = call("admin", "PATCH", SECRETS + "/a1", '[{"op":"remove","path":"/data/dup"}]',
                 {"Content-Type": "application/json-patch+json"})
assert code == 200 and "dup" not in got["data"], (code, got)
# A JSON body is read as JSON only, with Go's syntax errors.
for body, why in ((b"metadata:\n  name: y1\n", "invalid character 'm' looking for beginning of value"),
                  (b"{bad", "invalid character 'b' looking for beginning of object key string"),
                  (b"", "unexpected end of JSON input (<empty>)")):
    refused("admin", "POST", SECRETS, 400, "BadRequest", unrecognized + why, body, JSON)

# The namespace read kubectl makes after a NotFound is authorized and audited as `get
# namespaces`, the namespace named in its own URL as kube-apiserver's request info reads it.
code, got = call("admin", "GET", "/api/v1/namespaces/" + NS)
assert code == 200 and (got["kind"], got["metadata"]["name"], got["status"]["phase"]) == ("Namespace", NS, "Active"), got
refused("nobody", "GET", "/api/v1/namespaces/" + NS, 403, "Forbidden",
        'namespaces "%s" is forbidden: User "nobody" cannot get resource "namespaces" in API group "" in the namespace "%s"' % (NS, NS))
refused("admin", "GET", "/api/v1/namespaces/Bad_NS", 404, "NotFound", 'namespaces "Bad_NS" not found')
assert audited("/api/v1/namespaces/" + NS) == [("RequestReceived", None, NS, None), ("ResponseComplete", 200, NS, "allow"),
                                               ("RequestReceived", None, NS, None), ("ResponseComplete", 403, NS, "forbid")], \
    audited("/api/v1/namespaces/" + NS)

# Every answer carries its audit id (Audit-Id), the client's if it sent one, as WithAuditInit
# sets it: the id of the request's events, refused credentials and health included.
def answered_id(user, path, headers):
    c = connect(user) if user else http.client.HTTPSConnection(
        HOST, PORT, context=ssl.create_default_context(cafile=DIR + "/ca.pem"), timeout=60)
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    r.read()
    c.close()
    return r.getheader("Audit-Id")


assert answered_id("admin", SECRETS + "/a1?x=1", {"Audit-ID": "my-audit-id-1"}) == "my-audit-id-1"
with open(AUDIT) as f:
    mine = [json.loads(line) for line in f if (SECRETS + "/a1?x=1") in line]
assert [e["auditID"] for e in mine] == ["my-audit-id-1"] * 2, mine
made = answered_id("nobody", SECRETS + "/a1?x=2", {})
with open(AUDIT) as f:
    ids = {json.loads(line)["auditID"] for line in f if (SECRETS + "/a1?x=2") in line}
assert len(made) == 36 and ids == {made}, (made, ids)
assert answered_id(None, SECRETS + "?x=3", {"Authorization": "Bearer nope", "Audit-ID": "refused-1"}) == "refused-1"
assert len(answered_id(None, "/healthz", {})) == 36

# A create's events name the Secret its body names, as kube-apiserver's LogRequestObject fills
# objectRef.name from the request body before the object is stored: a generated name is not
# known then, and not recorded.
for body, uri in (({"metadata": {"name": "made1"}}, SECRETS + "?x=named"),
                  ({"metadata": {"generateName": "gen-"}}, SECRETS + "?x=generated")):
    code, got = call("admin", "POST", uri, json.dumps(dict(body, apiVersion="v1", kind="Secret")), JSON)
    assert code == 201, got
    named = body["metadata"].get("name")
    assert audited(uri) == [("RequestReceived", None, None, None), ("ResponseComplete", 201, named, "allow")], \
        (got["metadata"]["name"], audited(uri))

# A patch names no object either (kube-apiserver's LogRequestPatch): the uid and
# resourceVersion a merge patch carries are not the event's objectRef's.
code, made = call("admin", "GET", SECRETS + "/made1")
patch = {"metadata": {"uid": made["metadata"]["uid"], "resourceVersion": made["metadata"]["resourceVersion"],
                      "labels": {"patched": "yes"}}}
code, got = call("admin", "PATCH", SECRETS + "/made1", json.dumps(patch),
                 {"Content-Type": "application/merge-patch+json", "Audit-ID": "patch-ref"})
assert code == 200, got
with open(AUDIT) as f:
    refs = [json.loads(line)["objectRef"] for line in f if '"auditID":"patch-ref"' in line]
assert refs == [{"resource": "secrets", "namespace": NS, "name": "made1", "apiVersion": "v1"}] * 2, refs

# A body's name, uid and resourceVersion reach objectRef also when the request is refused after
# it was decoded (kube-apiserver's LogRequestObject runs right after decoding): a create with a
# resourceVersion (its storage's 500), a PUT of a missing Secret, a PUT whose name is not the
# URL's (objectRef.name stays the URL's).
for method, path, meta, code, ref_name in (
        ("POST", SECRETS, {"name": "rvset", "uid": "u-1", "resourceVersion": "12"}, 500, "rvset"),
        ("PUT", SECRETS + "/nothere", {"name": "nothere", "uid": "u-2", "resourceVersion": "7"}, 404, "nothere"),
        ("PUT", SECRETS + "/made1", {"name": "other", "uid": "u-3", "resourceVersion": "9"}, 400, "made1")):
    audit_id = "decoded-" + meta["uid"]
    body = json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": meta})
    got_code, got = call("admin", method, path, body, dict(JSON, **{"Audit-ID": audit_id}))
    assert got_code == code, (path, got_code, got)
    with open(AUDIT) as f:
        refs = [json.loads(line)["objectRef"] for line in f if ('"auditID":"%s"' % audit_id) in line]
    # RequestReceived is recorded before the body is read: with what the URL names.
    received = {"resource": "secrets", "namespace": NS, "apiVersion": "v1"}
    if method == "PUT":
        received["name"] = ref_name
    assert refs == [received, dict(received, name=ref_name, uid=meta["uid"],
                                   resourceVersion=meta["resourceVersion"])], (path, refs)

# Events and Services, which keyward holds none of but kubectl reads on its own (`kubectl
# events`, `kubectl cluster-info`), are authorized and audited as any collection, and answered
# as a cluster without any: empty lists at the store's revision, a watch with nothing to send,
# NotFound for a name, 405 for a write.
EVENTS = "/api/v1/namespaces/%s/events" % NS
refused("lister", "GET", EVENTS, 403, "Forbidden",
        'events is forbidden: User "lister" cannot list resource "events" in API group "" in the namespace "%s"' % NS)
assert audited(EVENTS) == [("RequestReceived", None, None, None), ("ResponseComplete", 403, None, "forbid")], \
    audited(EVENTS)
refused("single", "GET", EVENTS + "?watch=1", 403, "Forbidden",
        'events is forbidden: User "single" cannot watch resource "events" in API group "" in the namespace "%s"' % NS)
uri = EVENTS + "?fieldSelector=involvedObject.kind%3DSecret%2CinvolvedObject.apiVersion%3Dv1%2CinvolvedObject.name%3Da1"
code, got = call("admin", "GET", uri)
assert code == 200 and (got["kind"], got["apiVersion"], got["items"]) == ("EventList", "v1", []), got
rv = got["metadata"]["resourceVersion"]
assert int(rv) >= 1, got
assert audited(uri) == [("RequestReceived", None, None, None), ("ResponseComplete", 200, None, "allow")], audited(uri)
code, got = call("admin", "GET", EVENTS, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
assert code == 200 and got["kind"] == "Table" and got["rows"] == [], got
assert [c["name"] for c in got["columnDefinitions"] if c["priority"] == 0] == [
    "Last Seen", "Type", "Reason", "Object", "Message"], got["columnDefinitions"]
refused("admin", "GET", EVENTS + "?fieldSelector=spec.x%3Dy", 400, "BadRequest", "field label not supported: spec.x")
refused("admin", "GET", EVENTS + "/e1", 404, "NotFound", 'events "e1" not found')
refused("admin", "POST", EVENTS, 405, "MethodNotAllowed",
        "the server does not allow this method on the requested resource", body=b"{}", headers=JSON)
code, events = watch("admin", "/api/v1/events?resourceVersion=" + rv)
assert code == 200 and events == [], events
assert audited("/api/v1/events?resourceVersion=%s&watch=true&timeoutSeconds=1" % rv)[:2] == [
    ("RequestReceived", None, None, None), ("ResponseStarted", 200, None, "allow")], \
    audited("/api/v1/events?resourceVersion=%s&watch=true&timeoutSeconds=1" % rv)
uri = "/api/v1/namespaces/kube-system/services?labelSelector=kubernetes.io%2Fcluster-service%3Dtrue"
code, got = call("admin", "GET", uri)
assert code == 200 and (got["kind"], got["items"]) == ("ServiceList", []), got
refused("admin", "GET", "/api/v1/namespaces/kube-system/services/kubernetes", 404, "NotFound",
        'services "kubernetes" not found')

# A page holds `limit` of the Secrets a field selector keeps, read on past the ones it drops
# (as kube-apiserver's storage fills a page), and no remainingItemCount with a selector.
code, got = call("admin", "GET", SECRETS + "?fieldSelector=metadata.name%3Da3&limit=1")
assert code == 200 and [i["metadata"]["name"] for i in got["items"]] == ["a3"], got
assert "remainingItemCount" not in got["metadata"], got
# One name in one namespace is one key to kube-apiserver's registry: no page, no continue.
assert "continue" not in got["metadata"], got
code, got = call("admin", "GET", SECRETS + "?fieldSelector=type%3DOpaque&limit=2")
assert code == 200 and len(got["items"]) == 2 and got["metadata"].get("continue"), got

# A SelfSubjectAccessReview asks exactly one question, as kube-apiserver validates it.
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
def review(spec):
    return json.dumps({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec})
refused("single", "POST", SSAR, 422, "Invalid",
        'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: Invalid value: "null": '
        'exactly one of nonResourceAttributes or resourceAttributes must be specified',
        body=review({"resourceAttributes": None}), headers=JSON)
refused("single", "POST", SSAR, 422, "Invalid",
        'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.nonResourceAttributes: Invalid value: '
        'authorization.NonResourceAttributes{Path:"/healthz", Verb:"get"}: cannot be specified in combination with '
        'resourceAttributes',
        body=review({"resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": NS, "name": "a1"},
                     "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}), headers=JSON)
code, got = call("single", "POST", SSAR, review({"resourceAttributes": {"verb": "get", "resource": "secrets",
                                                                        "namespace": NS, "name": "a1"},
                                                  "nonResourceAttributes": None}), JSON)
assert code == 201 and got["status"]["allowed"] is True, got

# The review is read as kube-apiserver's create handler reads it: metadata must be empty, the
# kind and version must be the endpoint's, and unknown fields are warned about (refused under
# fieldValidation=Strict).
ask = {"resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": NS}}
refused("single", "POST", SSAR, 422, "Invalid",
        'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: metadata: Invalid value: '
              'v1.ObjectMeta{Name:"x", GenerateName:"", Namespace:"", SelfLink:"", UID:"", ResourceVersion:"", '
              'Generation:0, CreationTimestamp:time.Date(1, time.January, 1, 0, 0, 0, 0, time.UTC), '
              'DeletionTimestamp:<nil>, DeletionGracePeriodSeconds:(*int64)(nil), Labels:map[string]string(nil), '
              'Annotations:map[string]string(nil), OwnerReferences:[]v1.OwnerReference(nil), Finalizers:[]string(nil), '
              'ManagedFields:[]v1.ManagedFieldsEntry(nil)}: must be empty',
              body=json.dumps({"metadata": {"name": "x"}, "spec": ask}), headers=JSON)
refused("single", "POST", SSAR, 400, "BadRequest",
        'SubjectAccessReview in version "v1" cannot be handled as a SelfSubjectAccessReview: converting '
        '(v1.SubjectAccessReview) to (authorization.SelfSubjectAccessReview): unknown conversion',
        body=json.dumps({"kind": "SubjectAccessReview", "spec": ask}), headers=JSON)
refused("single", "POST", SSAR, 400, "BadRequest",
        'the API version in the data (authorization.k8s.io/v1beta1) does not match the expected API version '
        '(authorization.k8s.io/v1)',
        body=json.dumps({"apiVersion": "authorization.k8s.io/v1beta1", "spec": ask}), headers=JSON)
refused("single", "POST", SSAR + "?fieldValidation=Strict", 400, "BadRequest",
        'SelfSubjectAccessReview in version "v1" cannot be handled as a SelfSubjectAccessReview: strict decoding '
        'error: unknown field "spec.resourceAttributes.bogus"',
        body=json.dumps({"spec": {"resourceAttributes": dict(ask["resourceAttributes"], bogus=1)}}), headers=JSON)
refused("single", "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews?fieldValidation=Strict", 400,
        "BadRequest", 'SelfSubjectReview in version "v1" cannot be handled as a SelfSubjectReview: strict decoding '
        'error: unknown field "status.userInfo.zz"', body=json.dumps({"status": {"userInfo": {"zz": 1}}}), headers=JSON)
c = connect("single")
c.request("POST", SSAR, body=json.dumps({"spec": {"resourceAttributes": dict(ask["resourceAttributes"], bogus=1)}}),
          headers=JSON)
r = c.getresponse()
got = json.loads(r.read())
assert r.status == 201 and got["spec"] == ask and got["status"] == {"allowed": False}, got
assert r.getheader("Warning") == '299 - "unknown field \\"spec.resourceAttributes.bogus\\""', r.getheader("Warning")
c.close()

# A SubjectAccessReview asks about anyone (its creator needs create on subjectaccessreviews);
# a LocalSubjectAccessReview about one namespace (create on localsubjectaccessreviews there).
SAR = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
LSAR = "/apis/authorization.k8s.io/v1/namespaces/%s/localsubjectaccessreviews" % NS
def subject(spec, kind="SubjectAccessReview", metadata=None):
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": kind, "spec": spec}
    if metadata is not None:
        body["metadata"] = metadata
    return json.dumps(body)
get_a = lambda name: {"resourceAttributes": {"verb": "get", "resource": "secrets", "namespace": NS, "name": name}}
code, got = call("admin", "POST", SAR, subject(dict(get_a("a1"), user="single")), JSON)
assert code == 201 and got["status"] == {
    "allowed": True, "reason": 'RBAC: allowed by RoleBinding "single/%s" of Role "single" to User "single"' % NS}, got
assert got["spec"] == dict(get_a("a1"), user="single") and got["metadata"] == {"creationTimestamp": None}, got
code, got = call("admin", "POST", SAR, subject(dict(get_a("a2"), user="single")), JSON)
assert code == 201 and got["status"] == {"allowed": False}, got
# The groups are the ones given: none is added.
code, got = call("admin", "POST", SAR, subject(dict(get_a("a2"), user="x", groups=["system:masters"])), JSON)
assert code == 201 and got["status"]["allowed"] is True, got
refused("admin", "POST", SAR, 422, "Invalid",
        'SubjectAccessReview.authorization.k8s.io "" is invalid: spec.user: Invalid value: "": at least one of user '
        'or group must be specified', body=subject(get_a("a1")), headers=JSON)
refused("nobody", "POST", SAR, 403, "Forbidden",
        'subjectaccessreviews.authorization.k8s.io is forbidden: User "nobody" cannot create resource '
        '"subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope',
        body=subject(dict(get_a("a1"), user="single")), headers=JSON)
code, got = call("admin", "POST", LSAR, subject(dict(get_a("a1"), user="single"), "LocalSubjectAccessReview"), JSON)
assert code == 201 and got["status"]["allowed"] is True, got
assert got["metadata"] == {"namespace": NS, "creationTimestamp": None}, got
refused("admin", "POST", LSAR, 422, "Invalid",
        'LocalSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes.namespace: Invalid '
        'value: "other": must match metadata.namespace',
        body=subject({"user": "single", "resourceAttributes": {"verb": "get", "resource": "secrets",
                                                               "namespace": "other"}}, "LocalSubjectAccessReview"),
        headers=JSON)
refused("admin", "POST", LSAR, 400, "BadRequest",
        "the namespace of the provided object does not match the namespace sent on the request",
        body=subject(dict(get_a("a1"), user="single"), "LocalSubjectAccessReview", {"namespace": "other"}),
        headers=JSON)
refused("nobody", "POST", LSAR, 403, "Forbidden",
        'localsubjectaccessreviews.authorization.k8s.io is forbidden: User "nobody" cannot create resource '
        '"localsubjectaccessreviews" in API group "authorization.k8s.io" in the namespace "%s"' % NS,
        body=subject(dict(get_a("a1"), user="single"), "LocalSubjectAccessReview"), headers=JSON)
assert ("ResponseComplete", 201, None, "allow") in audited(SAR), audited(SAR)
print("ok")
