"""keyward's Kubernetes API on the wire, with Python's standard library only (http.client, ssl):
the exact Status bodies and codes of errors, limits, OpenAPI v2, and watch framing (newline per
event, Table column definitions only in the first event, BOOKMARK, 410 as an ERROR event).

Driven by tests/kube/python.rs:  python3 kube_http.py HOST PORT CA CERT KEY NS COMPACTED_RV
(Secret s1 exists in NS; COMPACTED_RV is a revision older than the retained history.)
Prints "ok" on success; any failed check raises.
"""

import http.client
import json
import re
import ssl
import sys
import time

HOST, PORT, CA, CERT, KEY, NS, OLD_RV = sys.argv[1:8]
PORT = int(PORT)


def conn(client_cert=True):
    ctx = ssl.create_default_context(cafile=CA)
    if client_cert:
        ctx.load_cert_chain(CERT, KEY)
    return http.client.HTTPSConnection(HOST, PORT, context=ctx, timeout=20)


def call(method, path, body=None, headers=None, client_cert=True):
    c = conn(client_cert)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, r.getheader("Content-Type"), data


def status(method, path, code, want, body=None, headers=None, client_cert=True):
    got_code, ctype, data = call(method, path, body, headers, client_cert)
    assert got_code == code, (method, path, got_code, data)
    assert ctype == "application/json", ctype
    want_full = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    want_full.update(want)
    want_full["code"] = code
    got = json.loads(data)
    assert got == want_full, (path, got, want_full)
    # kube-apiserver's field order.
    keys = [k for k in json.loads(data, object_pairs_hook=lambda kv: [k for k, _ in kv])]
    return keys


SECRETS = "/api/v1/namespaces/%s/secrets" % NS

# Health needs no credentials; everything else does.
assert call("GET", "/healthz", client_cert=False)[::2] == (200, b"ok")
keys = status("GET", "/api", 401, {"message": "Unauthorized", "reason": "Unauthorized"}, client_cert=False)
assert keys == ["kind", "apiVersion", "metadata", "status", "message", "reason", "code"], keys
# `Bearer  <token>` (two spaces) is no credential, and the answer says so, as kube-apiserver's.
c = conn(client_cert=False)
c.request("GET", "/api", headers={"Authorization": "Bearer  some-token-0123456789"})
r = c.getresponse()
r.read()
c.close()
assert (r.status, r.getheader("Warning")) == (
    401, '299 - "the provided Authorization header contains extra space before the bearer token, and is ignored"'), \
    (r.status, r.getheader("Warning"))

status("GET", SECRETS + "/nope", 404, {"message": 'secrets "nope" not found', "reason": "NotFound",
                                       "details": {"name": "nope", "kind": "secrets"}})
# The path is read decoded, as Go's URL.Path.
status("GET", SECRETS + "/x%20y", 404, {"message": 'secrets "x y" not found', "reason": "NotFound",
                                        "details": {"name": "x y", "kind": "secrets"}})
# JSON is indented by two spaces for ?pretty=<Go boolean>, and without one for curl's, Wget's
# and browsers' user agents, as kube-apiserver's isPrettyPrint decides (its MarshalIndent: no
# trailing newline; compact JSON ends with the newline of Go's json.Encoder); the content is
# the same.
compact = call("GET", SECRETS + "/nope")[2]
assert not compact.startswith(b"{\n") and compact.endswith(b"}\n") and compact.count(b"\n") == 1, compact
assert call("GET", SECRETS)[2].endswith(b"}\n")
for path, ua, indented in ((SECRETS + "/nope?pretty=true", None, True), (SECRETS + "/nope?pretty=1", None, True),
                           (SECRETS + "/nope", "curl/8.5.0", True), (SECRETS + "/nope", "Wget/1.21", True),
                           (SECRETS + "/nope", "Mozilla/5.0 (X11)", True), (SECRETS + "/nope?pretty=false", "curl/8.5.0", False),
                           (SECRETS + "/nope?pretty=yes", None, False), (SECRETS + "/nope?pretty=", "curl/8", True),
                           (SECRETS + "?pretty=true", None, True)):
    code, ctype, data = call("GET", path, headers={"User-Agent": ua} if ua else None)
    assert data.startswith(b'{\n  "') == indented and data.endswith(b"\n") != indented, (path, ua, data[:80])
    if "nope" in path:
        assert (code, json.loads(data)) == (404, json.loads(compact)), (path, data)
    else:
        assert code == 200 and json.loads(data)["kind"] == "SecretList", data[:80]
# A name kube-apiserver's storage cannot key (IsValidPathSegmentName) is its 400, whatever the
# method (a server-side apply too); one that is only not a valid name is NotFound.
for method, body, ctype in (("GET", None, None), ("DELETE", None, None),
                            ("PUT", b"{}", "application/json"),
                            ("PATCH", b"{}", "application/merge-patch+json"),
                            ("PATCH", b"{}", "application/apply-patch+yaml")):
    hdrs = {"Content-Type": ctype} if ctype else None
    q = "?fieldManager=t" if ctype == "application/apply-patch+yaml" else ""
    for raw, name, why in (("a%25b", "a%b", "may not contain '%'"), ("..", "..", "may not be '..'"),
                           (".", ".", "may not be '.'")):
        status(method, SECRETS + "/" + raw + q, 400,
               {"message": 'Name parameter invalid: "%s": %s' % (name, why), "reason": "BadRequest"},
               body=body, headers=hdrs)
status("GET", SECRETS + "/UPPER", 404, {"message": 'secrets "UPPER" not found', "reason": "NotFound",
                                        "details": {"name": "UPPER", "kind": "secrets"}})
status("GET", "/api/v1/namespaces/" + NS + "/%73ecrets/nope", 404, {"message": 'secrets "nope" not found', "reason": "NotFound",
                                                                "details": {"name": "nope", "kind": "secrets"}})
status("GET", "/apis/apps/v1/deployments", 404,
       {"message": "the server could not find the requested resource", "reason": "NotFound", "details": {}})
# go-restful's 405 through kube-apiserver's serviceErrorHandler, before Accept is looked at.
for method, path in (("POST", SECRETS + "/s1"), ("PUT", SECRETS), ("PATCH", SECRETS), ("POST", "/api/v1/secrets"),
                     ("DELETE", "/api/v1/secrets"), ("OPTIONS", SECRETS + "/s1"),
                     ("POST", "/api/v1/watch/secrets"), ("DELETE", "/api/v1/watch/namespaces/" + NS + "/secrets"),
                     ("PUT", "/api/v1/watch/namespaces/" + NS + "/secrets/s1")):
    status(method, path, 405, {"message": "the server does not allow this method on the requested resource",
                               "reason": "MethodNotAllowed", "details": {}}, body=b"{}",
           headers={"Accept": "application/json, text/html"})
status("GET", SECRETS + "?fieldSelector=spec.x%3D1", 400,
       {"message": "field label not supported: spec.x", "reason": "BadRequest"})
# includeObject is validated when a Table is asked for (kube-apiserver's optionsForTransform and
# ValidateTableOptions), and ignored otherwise.
status("GET", SECRETS + "?includeObject=Nope", 400,
       {"message": "Unable to convert to Table as requested: includeObject: Invalid value: \"Nope\": "
                   "must be 'Metadata', 'Object', 'None', or empty", "reason": "BadRequest"},
       headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
assert call("GET", SECRETS + "?includeObject=Nope&limit=1")[0] == 200
status("POST", SECRETS, 413, {"message": "Request entity too large: limit is 3145728",
                              "reason": "RequestEntityTooLarge"}, body=b"x" * (4 << 20),
       headers={"Content-Type": "application/json"})
status("PATCH", SECRETS + "/s1", 415, {"message": "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml",
                                       "reason": "UnsupportedMediaType"}, body=b"{}", headers={"Content-Type": "text/plain"})
status("PATCH", SECRETS + "/s1", 422, {
    "message": 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch',
    "reason": "Invalid",
    "details": {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
        {"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}]}},
    body=b"{}", headers={"Content-Type": "application/apply-patch+yaml"})
# A JSON patch that is no list of operations, in the words of the decoder that reads it first:
# the handler's own for its field checks (the default), the patch library's with Ignore.
for query, message in (("", "error decoding patch: json: cannot unmarshal object into Go value of type "
                            "[]handlers.jsonPatchOp"),
                       ("?fieldValidation=Ignore", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")):
    status("PATCH", SECRETS + "/s1" + query, 400, {"message": message, "reason": "BadRequest"},
           body=b'{"op": "add"}', headers={"Content-Type": "application/json-patch+json"})
# A patch that is no JSON, in Go's words, as each patch type's first decoder reports it.
for ctype, query, message in (
        ("json-patch+json", "", "error decoding patch: invalid character 'b' looking for beginning of object key string"),
        ("json-patch+json", "?fieldValidation=Ignore", "invalid character 'b' looking for beginning of object key string"),
        ("merge-patch+json", "", "error decoding patch: invalid character 'b' looking for beginning of object key string"),
        ("merge-patch+json", "?fieldValidation=Ignore", "Invalid JSON Patch"),
        ("strategic-merge-patch+json", "", "invalid character 'b' looking for beginning of object key string")):
    status("PATCH", SECRETS + "/s1" + query, 400, {"message": message, "reason": "BadRequest"},
           body=b"{bad", headers={"Content-Type": "application/" + ctype})
status("PATCH", SECRETS + "/s1?force=true", 422, {
    "message": 'PatchOptions.meta.k8s.io "" is invalid: force: Forbidden: may not be specified for non-apply patch',
    "reason": "Invalid",
    "details": {"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [
        {"reason": "FieldValueForbidden", "message": "Forbidden: may not be specified for non-apply patch", "field": "force"}]}},
    body=b"{}", headers={"Content-Type": "application/merge-patch+json"})
status("POST", SECRETS + "?dryRun=Some", 422, {
    "message": 'CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: "Some": supported values: "All"',
    "reason": "Invalid",
    "details": {"group": "meta.k8s.io", "kind": "CreateOptions", "causes": [
        {"reason": "FieldValueNotSupported", "message": 'Unsupported value: "Some": supported values: "All"', "field": "dryRun"}]}},
    body=b"{}")

# Output negotiation: YAML when asked for (kube-apiserver's: its JSON with sorted keys), a
# Status in YAML too; 406 (in indented JSON) when Accept names nothing the server writes.
code, ctype, data = call("GET", SECRETS + "/s1", headers={"Accept": "application/yaml"})
text = data.decode()
assert (code, ctype) == (200, "application/yaml"), (code, ctype, text)
assert text.startswith("apiVersion: v1\ndata:\n") and "\nkind: Secret\nmetadata:\n" in text and "\n  name: s1\n" in text, text
# Strings that would read back as something else are double-quoted, as go-yaml v2 writes them.
assert '\n  creationTimestamp: "20' in text and '\n  resourceVersion: "' in text, text
code, ctype, data = call("GET", SECRETS + "/nope", headers={"Accept": "application/yaml"})
text = data.decode()
assert (code, ctype) == (404, "application/yaml"), (code, ctype, text)
assert "\ncode: 404\n" in text and "\nreason: NotFound\n" in text and text.startswith("apiVersion: v1\n"), text
code, ctype, data = call("GET", SECRETS, headers={"Accept": "application/yaml"}, client_cert=False)
assert (code, ctype) == (401, "application/yaml") and "\nreason: Unauthorized\n" in data.decode(), (code, ctype, data)
for accept in ("text/html", "application/json;as=Foo;v=v1;g=meta.k8s.io", "application/json;q=0"):
    status("GET", SECRETS + "/s1", 406, {
        "message": "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
        "reason": "NotAcceptable"}, headers={"Accept": accept})
status("GET", SECRETS, 406, {
    "message": "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
    "reason": "NotAcceptable"}, headers={"Accept": "text/plain"})
# Written raw and indented, as kube-apiserver's WriteRawJSON (json.MarshalIndent) writes it.
code, ctype, data = call("GET", SECRETS + "/s1", headers={"Accept": "text/html"})
assert data.startswith(b'{\n  "kind": "Status",\n  "apiVersion": "v1",\n  "metadata": {},\n  "status": "Failure",\n'), data

# OpenAPI v2: an empty protobuf document.
code, ctype, data = call("GET", "/openapi/v2")
assert (code, ctype, data) == (200, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf", b""), (code, ctype, data)

# A single get as a Table is one row.
code, ctype, data = call("GET", SECRETS + "/s1", headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
t = json.loads(data)
# kube-apiserver writes a Table with its serializer's media type, plain JSON.
assert ctype == "application/json", ctype
assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Type", "Data", "Age"]
assert t["rows"][0]["cells"][:3] == ["s1", "Opaque", 1], t["rows"]
assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
# A transform is served as kube-apiserver allows it (AllowsMediaTypeTransform): a Table in JSON or
# YAML, not protobuf; only of meta.k8s.io v1 or v1beta1; PartialObjectMetadata of one object and
# the list form of a list.
code, ctype, data = call("GET", SECRETS + "/s1", headers={"Accept": "application/yaml;as=Table;v=v1;g=meta.k8s.io"})
assert (code, ctype) == (200, "application/yaml") and b"kind: Table" in data, (code, ctype, data)
for accept in ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io",
               "application/json;as=Table;v=v2;g=meta.k8s.io", "application/json;as=Table"):
    status("GET", SECRETS + "/s1", 406, {"message": "only the following media types are accepted: application/json, "
                                                    "application/yaml, application/vnd.kubernetes.protobuf",
                                         "reason": "NotAcceptable"}, headers={"Accept": accept})
status("GET", SECRETS + "/s1", 406, {
    "message": "you requested PartialObjectMetadataList, but the requested object is not a list (*core.Secret)",
    "reason": "NotAcceptable"}, headers={"Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"})
status("GET", SECRETS, 406, {
    "message": "you requested PartialObjectMetadata, but the requested object is a list (*core.SecretList)",
    "reason": "NotAcceptable"}, headers={"Accept": "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"})


def watch_lines(path, n, accept="application/json"):
    """The first n lines of a watch (headers arrive before any event)."""
    c = conn()
    c.request("GET", path, headers={"Accept": accept})
    r = c.getresponse()
    assert r.status == 200, r.status
    # Every response is marked as not to be cached, a watch's too (WithCacheControl).
    assert r.getheader("Cache-Control") == "no-cache, private", r.getheaders()
    lines = []
    buf = b""
    while len(lines) < n:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf and len(lines) < n:
            line, buf = buf.split(b"\n", 1)
            # metav1.WatchEvent's fields in kube-apiserver's order.
            assert line.startswith(b'{"type":"'), line[:40]
            lines.append(json.loads(line))
    c.close()
    return r.getheader("Content-Type"), lines


# Tables in a watch: column definitions only in the first event.
ctype, evs = watch_lines(SECRETS + "?watch=true&resourceVersion=0", 2,
                         "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
assert ctype == "application/json", ctype
assert [e["type"] for e in evs] == ["ADDED", "ADDED"], evs
assert "columnDefinitions" in evs[0]["object"] and "columnDefinitions" not in evs[1]["object"], evs

# Bookmarks when allowed (the test server sends one every 200 ms).
ctype, evs = watch_lines(SECRETS + "?watch=1&allowWatchBookmarks=true&fieldSelector=metadata.name%3Ds1", 2)
assert [e["type"] for e in evs] == ["ADDED", "BOOKMARK"], evs
bm = evs[-1]["object"]
assert bm["kind"] == "Secret" and bm["metadata"]["resourceVersion"], bm
# As kube-apiserver writes an empty object's metadata: the zero creationTimestamp as null.
assert list(bm["metadata"].items())[1:] == [("creationTimestamp", None)], bm

# A bookmark's resourceVersion follows the store, not the watch's last event: changes this
# watch leaves out (another namespace) move it on, so that a client resuming from it does not
# replay what it has already seen.
start_rv = json.loads(call("GET", SECRETS)[2])["metadata"]["resourceVersion"]
code, _, data = call("POST", "/api/v1/namespaces/elsewhere/secrets",
                     body=json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
                     headers={"Content-Type": "application/json"})
assert code == 201, data
written = int(json.loads(data)["metadata"]["resourceVersion"])
ctype, evs = watch_lines(SECRETS + "?watch=1&allowWatchBookmarks=true&timeoutSeconds=3&resourceVersion=" + start_rv, 100)
assert evs and all(e["type"] == "BOOKMARK" for e in evs), evs
assert int(evs[-1]["object"]["metadata"]["resourceVersion"]) >= written, (written, evs)
# Without a resourceVersion, the first bookmark is at the starting list's revision, not at
# the revision of the last object listed.
ctype, evs = watch_lines(SECRETS + "?watch=1&allowWatchBookmarks=true&fieldSelector=metadata.name%3Ds1", 2)
assert [e["type"] for e in evs] == ["ADDED", "BOOKMARK"], evs
assert int(evs[1]["object"]["metadata"]["resourceVersion"]) >= written, (written, evs)
code, _, data = call("DELETE", "/api/v1/namespaces/elsewhere/secrets/x")
assert code == 200, data

# A watch from a revision the store has not reached waits for it, as kube-apiserver's does:
# it gets the changes after that revision, not a refusal.
now = int(json.loads(call("GET", SECRETS)[2])["metadata"]["resourceVersion"])
c = conn()
c.request("GET", SECRETS + "?watch=true&timeoutSeconds=2&resourceVersion=%d" % (now + 1))
r = c.getresponse()
assert r.status == 200, (r.status, r.read())
for name in ("future-a", "future-b"):
    code, _, data = call("POST", SECRETS, body=json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}),
                         headers={"Content-Type": "application/json"})
    assert code == 201, data
evs = [json.loads(line) for line in r.read().splitlines() if line.strip()]
c.close()
assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [("ADDED", "future-b")], evs
for name in ("future-a", "future-b"):
    assert call("DELETE", SECRETS + "/" + name)[0] == 200

# A revision older than the history: HTTP 200, then one ERROR event with a 410 Status.
ctype, evs = watch_lines(SECRETS + "?watch=true&resourceVersion=" + OLD_RV, 1)
assert evs[0]["type"] == "ERROR", evs
err = evs[0]["object"]
assert (err["kind"], err["status"], err["reason"], err["code"]) == ("Status", "Failure", "Expired", 410), err
assert re.fullmatch(r"too old resource version: %s \(\d+\)" % OLD_RV, err["message"]), err

# A list exactly at a revision compacted away is 410, in kube-apiserver's words.
status("GET", SECRETS + "?resourceVersionMatch=Exact&resourceVersion=" + OLD_RV, 410,
       {"message": "The resourceVersion for the provided list is too old.", "reason": "Expired"})

# timeoutSeconds ends the stream.
rv = json.loads(call("GET", SECRETS)[2])["metadata"]["resourceVersion"]
start = time.time()
c = conn()
c.request("GET", SECRETS + "?watch=true&timeoutSeconds=1&resourceVersion=" + rv)
r = c.getresponse()
assert r.read() == b""
assert time.time() - start < 10
# deletecollection with a selector (a dry run first: nothing goes).
for dry, left in (("&dryRun=All", 200), ("", 404)):
    code, ctype, data = call("DELETE", SECRETS + "?fieldSelector=metadata.name%3Ds8" + dry)
    deleted = json.loads(data)
    assert (code, deleted["kind"]) == (200, "SecretList"), (code, data)
    assert [i["metadata"]["name"] for i in deleted["items"]] == ["s8"], deleted
    assert call("GET", SECRETS + "/s8")[0] == left

# A delete's precondition that does not hold is a Conflict; the delete's answer is a Success Status.
code, _, data = call("DELETE", SECRETS + "/s7", body=json.dumps({"preconditions": {"uid": "other"}}),
                     headers={"Content-Type": "application/json"})
got = json.loads(data)
assert (code, got["reason"]) == (409, "Conflict"), got
# kube-apiserver checks a delete's preconditions before it deletes, naming the Kind.
uid7 = json.loads(call("GET", SECRETS + "/s7")[2])["metadata"]["uid"]
assert got["message"] == ('Operation cannot be fulfilled on Secret "s7": the UID in the precondition (other) does not '
                          'match the UID in record (%s). The object might have been deleted and then recreated' % uid7), got
assert got["details"] == {"name": "s7", "kind": "Secret"}, got
# An update's uid that is not the stored one fails in its storage, in the storage error's words.
s7 = json.loads(call("GET", SECRETS + "/s7")[2])
s7["metadata"]["uid"] = "other"
code, _, data = call("PUT", SECRETS + "/s7", body=json.dumps(s7), headers={"Content-Type": "application/json"})
got = json.loads(data)
assert (code, got["reason"], got["details"]) == (409, "Conflict", {"name": "s7", "kind": "secrets"}), got
assert got["message"] == (
    'Operation cannot be fulfilled on secrets "s7": StorageError: invalid object, Code: 4, Key: /registry/secrets/%s/s7, '
    'ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: other, UID in object meta: %s'
    % (NS, uid7)), got
code, _, data = call("DELETE", SECRETS + "/s7", body=json.dumps({"propagationPolicy": "Background"}),
                     headers={"Content-Type": "application/json"})
got = json.loads(data)
assert code == 200 and got["status"] == "Success" and got["details"]["name"] == "s7", got
assert got["details"]["kind"] == "secrets" and got["details"]["uid"], got

# The watch cap (3 in the test server): one more is 429 until one closes.
time.sleep(0.5)
held = []
for _ in range(3):
    c = conn()
    c.request("GET", SECRETS + "?watch=true&resourceVersion=" + rv)
    assert c.getresponse().status == 200
    held.append(c)
# kube-apiserver's limits answer with http.Error's plain text, not a Status, and say when to
# retry in the Retry-After header (client-go retries a 429 only with it).
# Whatever the client accepts.
for accept in ("application/json", "application/yaml"):
    c = conn()
    c.request("GET", SECRETS + "?watch=true", headers={"Accept": accept})
    r = c.getresponse()
    body = r.read()
    assert (r.status, r.getheader("Retry-After"), r.getheader("Content-Type"), r.getheader("X-Content-Type-Options"), body) == (
        429, "1", "text/plain; charset=utf-8", "nosniff", b"Too many requests, please try again later.\n"), (accept, r.status, r.getheaders(), body)
    c.close()
# Other errors carry no Retry-After.
c = conn()
c.request("GET", SECRETS + "/nope")
r = c.getresponse()
assert (r.status, r.getheader("Retry-After")) == (404, None), (r.status, r.getheaders())
c.close()
for c in held:
    c.close()

# (After the watch cap's test, whose watches' revision these writes would age out.)
# timeoutSeconds=0 is no timeout given, as kube-apiserver reads it (GetTimeoutForWatch): the
# watch stays open and gets the next change.
import threading
rv0 = json.loads(call("GET", SECRETS)[2])["metadata"]["resourceVersion"]
zero = {}
t = threading.Thread(target=lambda: zero.update(
    evs=watch_lines(SECRETS + "?watch=true&timeoutSeconds=0&resourceVersion=" + rv0, 1)[1]))
t.start()
time.sleep(1.5)
code, _, data = call("POST", SECRETS, body=json.dumps({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "zero-timeout"}}),
                     headers={"Content-Type": "application/json"})
assert code == 201, data
t.join(20)
assert [(e["type"], e["object"]["metadata"]["name"]) for e in zero["evs"]] == [("ADDED", "zero-timeout")], zero
assert call("DELETE", SECRETS + "/zero-timeout")[0] == 200

# deletecollection answers the list it took before deleting (kube-apiserver's DeleteCollection):
# a Secret held by a finalizer is listed as it was, without the deletionTimestamp its delete set,
# and no item is newer than the list (after the watch cap's test: these writes would
# age its watches' revision out of the test server's short history).
code, _, data = call("POST", SECRETS, body=json.dumps({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "s9", "finalizers": ["example.com/hold"]}}),
                     headers={"Content-Type": "application/json"})
assert code == 201, data
code, _, data = call("DELETE", SECRETS + "?fieldSelector=metadata.name%3Ds9")
deleted = json.loads(data)
assert code == 200 and [i["metadata"]["name"] for i in deleted["items"]] == ["s9"], deleted
item = deleted["items"][0]["metadata"]
assert "deletionTimestamp" not in item, item
assert int(item["resourceVersion"]) <= int(deleted["metadata"]["resourceVersion"]), deleted
held = json.loads(call("GET", SECRETS + "/s9")[2])
assert "deletionTimestamp" in held["metadata"], held
code, _, data = call("PATCH", SECRETS + "/s9", body=json.dumps({"metadata": {"finalizers": None}}),
                     headers={"Content-Type": "application/merge-patch+json"})
assert code == 200, data
assert call("GET", SECRETS + "/s9")[0] == 404

# A resourceVersion that is not a number fails in kube-apiserver's storage, whose error its
# handlers pass on as a 500 without a reason; so does a create that sets one (after the
# object's validation, and not in a dry run, which never reaches the storage).
for path in (SECRETS + "?resourceVersion=abc", SECRETS + "?watch=1&resourceVersion=-1",
             "/api/v1/events?resourceVersion=1x", SECRETS + "/any-name?resourceVersion=x1"):
    bad = path.rsplit("=", 1)[1]
    status("GET", path, 500, {"message": 'resourceVersion: Invalid value: "%s": strconv.ParseUint: parsing "%s": '
                                         'invalid syntax' % (bad, bad)})
JSON_CT = {"Content-Type": "application/json"}
def with_version(name):
    return json.dumps({"apiVersion": "v1", "kind": "Secret", "data": {"k": "dg=="},
                       "metadata": {"name": name, "resourceVersion": "12"}}).encode()
status("POST", SECRETS, 500, {"message": "resourceVersion should not be set on objects to be created"},
       body=with_version("rv-set"), headers=JSON_CT)
assert call("GET", SECRETS + "/rv-set")[0] == 404
code, _, data = call("POST", SECRETS + "?dryRun=All", with_version("rv-set"), JSON_CT)
assert code == 201 and json.loads(data)["metadata"]["resourceVersion"] == "12", (code, data)
assert call("GET", SECRETS + "/rv-set")[0] == 404
code, _, data = call("POST", SECRETS, with_version("Bad_Name"), JSON_CT)
assert code == 422 and json.loads(data)["reason"] == "Invalid", (code, data)

# Repeated keys of a YAML body, as kube-apiserver's YAML decoder (go-yaml v2's strict decode)
# reports them: the line where the repeated key's value starts; one error under Strict, a
# warning each under Warn (the default); the last value is kept.
def warnings_of(method, path, body, ctype):
    c = conn()
    c.request(method, path, body=body, headers={"Content-Type": ctype})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, [w for k, w in r.getheaders() if k.lower() == "warning"], data

DUP_YAML = b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: dup-a\n  name: dup-b\n  foo: 1\ndata:\n  k: MQ==\n  k:\n    Mg==\n"
status("POST", SECRETS + "?fieldValidation=Strict", 400, {
    "reason": "BadRequest",
    "message": 'Secret in version "v1" cannot be handled as a Secret: strict decoding error: yaml: unmarshal errors:\n'
               '  line 5: key "name" already set in map\n  line 10: key "k" already set in map, unknown field "metadata.foo"'},
    body=DUP_YAML, headers={"Content-Type": "application/yaml"})
assert call("GET", SECRETS + "/dup-b")[0] == 404
code, warns, data = warnings_of("POST", SECRETS, DUP_YAML, "application/yaml")
assert code == 201 and warns == ['299 - "line 5: key \\"name\\" already set in map"',
                                 '299 - "line 10: key \\"k\\" already set in map"',
                                 '299 - "unknown field \\"metadata.foo\\""'], (code, warns)
assert json.loads(data)["data"] == {"k": "Mg=="} and json.loads(data)["metadata"]["name"] == "dup-b", data
APPLY = SECRETS + "/dup-c?fieldManager=t"
APPLY_YAML = b"apiVersion: v1\nkind: Secret\nmetadata:\n  name: dup-c\ndata:\n  k: MQ==\n  k: Mg==\n"
status("PATCH", APPLY + "&fieldValidation=Strict", 400, {
    "reason": "BadRequest",
    "message": 'error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n'
               '  line 7: key "k" already set in map'},
    body=APPLY_YAML, headers={"Content-Type": "application/apply-patch+yaml"})
assert call("GET", SECRETS + "/dup-c")[0] == 404
for expect in (201, 200):
    code, warns, data = warnings_of("PATCH", APPLY, APPLY_YAML, "application/apply-patch+yaml")
    assert code == expect and warns == ['299 - "line 7: key \\"k\\" already set in map"'], (code, warns, data)
    assert json.loads(data)["data"] == {"k": "Mg=="}, data
code, warns, _ = warnings_of("PATCH", APPLY + "&fieldValidation=Ignore", APPLY_YAML, "application/apply-patch+yaml")
assert code == 200 and warns == [], (code, warns)
# Server-side applies racing to create one Secret: one creates it (201), the others apply to it
# (200), as kube-apiserver's apply retries its update after a lost create; never AlreadyExists.
import threading


def race(name, managers):
    results = {}

    def apply(m):
        body = ("apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\ndata:\n  %s: MQ==\n" % (name, m)).encode()
        results[m] = call("PATCH", SECRETS + "/" + name + "?fieldManager=" + m, body,
                          {"Content-Type": "application/apply-patch+yaml"})
    threads = [threading.Thread(target=apply, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


for n in range(8):
    name = "race-%d" % n
    managers = ["m%d" % i for i in range(4)]
    results = race(name, managers)
    codes = sorted(r[0] for r in results.values())
    assert codes == [200, 200, 200, 201], (name, {m: (r[0], r[2][:200]) for m, r in results.items()})
    got = json.loads(call("GET", SECRETS + "/" + name)[2])
    assert sorted(got["data"]) == managers, got
    owners = sorted(f["manager"] for f in got["metadata"]["managedFields"] if f["operation"] == "Apply")
    assert owners == managers, got["metadata"]["managedFields"]
print("ok")
