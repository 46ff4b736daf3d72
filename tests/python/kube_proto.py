#!/usr/bin/env python3
"""Independent protobuf encoder and decoder for tests/kube/proto.rs.

Compiles tests/data/kube/k8s_subset.proto (Kubernetes field numbers) with grpc_tools.protoc,
then either

  cases           prints a JSON list of k8s\\0-enveloped bodies (hex) built with Python's
                  google.protobuf, as kubectl 1.32+ sends them (empty strings written), each
                  with the JSON the same request would carry;
  decode-secret   reads a k8s\\0 Secret body (hex) on stdin, written by keyward, and prints what
                  google.protobuf reads in it as JSON;
  storage-secret  reads a Secret as Kubernetes JSON on stdin and prints (hex) the bytes
                  kube-apiserver stores for it before encryption: the k8s\\0 envelope, every
                  non-pointer field written (gogo-protobuf's rule), pointer fields only when set,
                  map entries in key order, times as whole seconds with nanos 0.
"""
import base64
import datetime
import importlib
import json
import os
import sys
import tempfile

from grpc_tools import protoc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.join(HERE, "..", "data", "kube")
MAGIC = b"k8s\x00"


def load():
    out = tempfile.mkdtemp(prefix="kube-proto-")
    rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", "k8s_subset.proto"])
    if rc != 0:
        raise SystemExit(f"protoc failed: {rc}")
    sys.path.insert(0, out)
    return importlib.import_module("k8s_subset_pb2")


pb = load()


def envelope(api_version, kind, msg):
    u = pb.Unknown()
    u.typeMeta.apiVersion = api_version
    u.typeMeta.kind = kind
    u.raw = msg.SerializeToString()
    u.contentEncoding = ""
    u.contentType = ""
    return MAGIC + u.SerializeToString()


def gogo_empty_meta(meta):
    """Every non-pointer ObjectMeta field written, as gogo-protobuf does."""
    for f in ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion"):
        if not meta.HasField(f):
            setattr(meta, f, "")
    meta.generation = 0
    meta.creationTimestamp.SetInParent()


def rfc3339(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64(b):
    return base64.b64encode(b).decode()


def cases():
    out = []

    s = pb.Secret()
    s.metadata.name = "s1"
    gogo_empty_meta(s.metadata)
    s.data["pw"] = b"hunter2"
    s.data["user"] = b"admin"
    s.type = ""
    out.append({
        "name": "kubectl create secret generic (1.33 body)",
        "body": envelope("v1", "Secret", s).hex(),
        "expected": {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s1"},
                     "data": {"pw": b64(b"hunter2"), "user": b64(b"admin")}},
    })

    s = pb.Secret()
    m = s.metadata
    m.name = "full"
    m.namespace = "team"
    m.uid = "0b1a-uid"
    m.resourceVersion = "42"
    m.creationTimestamp.seconds = 1700000000
    m.labels["app"] = "web"
    m.annotations["note"] = "hello"
    r = m.ownerReferences.add()
    r.apiVersion = "apps/v1"
    r.kind = "Deployment"
    r.name = "d"
    r.uid = "owner-uid"
    r.controller = True
    m.finalizers.append("example.com/keep")
    e = m.managedFields.add()
    e.manager = "kubectl"
    e.operation = "Apply"
    e.apiVersion = "v1"
    e.time.seconds = 1700000100
    e.fieldsType = "FieldsV1"
    e.fieldsV1.Raw = json.dumps({"f:data": {"f:tls.crt": {}}}).encode()
    s.data["tls.crt"] = b"\x00\x01\xffcert"
    s.data["tls.key"] = b"key"
    s.stringData["extra"] = "plain"
    s.type = "kubernetes.io/tls"
    s.immutable = True
    out.append({
        "name": "Secret with every ObjectMeta field keyward keeps",
        "body": envelope("v1", "Secret", s).hex(),
        "expected": {
            "kind": "Secret", "apiVersion": "v1",
            "metadata": {
                "name": "full", "namespace": "team", "uid": "0b1a-uid", "resourceVersion": "42",
                "creationTimestamp": rfc3339(1700000000),
                "labels": {"app": "web"}, "annotations": {"note": "hello"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d",
                                     "uid": "owner-uid", "controller": True}],
                "finalizers": ["example.com/keep"],
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                                   "time": rfc3339(1700000100), "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:data": {"f:tls.crt": {}}}}],
            },
            "immutable": True,
            "data": {"tls.crt": b64(b"\x00\x01\xffcert"), "tls.key": b64(b"key")},
            "stringData": {"extra": "plain"},
            "type": "kubernetes.io/tls",
        },
    })

    r = pb.SelfSubjectAccessReview()
    gogo_empty_meta(r.metadata)
    a = r.spec.resourceAttributes
    a.namespace, a.verb, a.group, a.version = "default", "get", "", ""
    a.resource, a.subresource, a.name = "secrets", "", ""
    r.status.allowed = False
    r.status.reason = ""
    r.status.evaluationError = ""
    r.status.denied = False
    out.append({
        "name": "kubectl auth can-i get secrets (1.33 body)",
        "body": envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", r).hex(),
        "expected": {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                     "metadata": {},
                     "spec": {"resourceAttributes": {"namespace": "default", "verb": "get",
                                                     "resource": "secrets"}},
                     "status": {"allowed": False}},
    })

    r = pb.SelfSubjectAccessReview()
    a = r.spec.resourceAttributes
    a.verb, a.resource, a.name = "list", "secrets", ""
    a.fieldSelector.rawSelector = "metadata.name=x"
    q = a.labelSelector.requirements.add()
    q.key, q.operator = "app", "In"
    q.values.extend(["a", "b"])
    r.spec.nonResourceAttributes.path = "/healthz"
    r.spec.nonResourceAttributes.verb = "get"
    out.append({
        "name": "SelfSubjectAccessReview with selectors and non-resource attributes",
        "body": envelope("authorization.k8s.io/v1", "SelfSubjectAccessReview", r).hex(),
        "expected": {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                     "metadata": {},
                     "spec": {"resourceAttributes": {
                                  "verb": "list", "resource": "secrets",
                                  "fieldSelector": {"rawSelector": "metadata.name=x"},
                                  "labelSelector": {"requirements": [
                                      {"key": "app", "operator": "In", "values": ["a", "b"]}]}},
                              "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}},
    })

    r = pb.SelfSubjectRulesReview()
    gogo_empty_meta(r.metadata)
    r.spec.namespace = "default"
    out.append({
        "name": "kubectl auth can-i --list",
        "body": envelope("authorization.k8s.io/v1", "SelfSubjectRulesReview", r).hex(),
        "expected": {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
                     "metadata": {}, "spec": {"namespace": "default"}},
    })

    for version in ("v1", "v1beta1"):
        r = pb.SelfSubjectReview()
        gogo_empty_meta(r.metadata)
        r.status.userInfo.username = ""
        out.append({
            "name": f"kubectl auth whoami ({version})",
            "body": envelope(f"authentication.k8s.io/{version}", "SelfSubjectReview", r).hex(),
            "expected": {"kind": "SelfSubjectReview",
                         "apiVersion": f"authentication.k8s.io/{version}", "metadata": {}},
        })
    return out


def parse_time(text):
    t = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return int(t.timestamp())


def set_time(msg, text):
    msg.SetInParent()
    if text:
        msg.seconds = parse_time(text)
        msg.nanos = 0


def storage_secret(doc):
    s = pb.Secret()
    meta = doc.get("metadata", {})
    m = s.metadata
    m.name = meta.get("name", "")
    m.generateName = meta.get("generateName", "")
    m.namespace = meta.get("namespace", "")
    m.selfLink = ""
    m.uid = meta.get("uid", "")
    m.resourceVersion = ""
    m.generation = 0
    set_time(m.creationTimestamp, meta.get("creationTimestamp", ""))
    if meta.get("deletionTimestamp"):
        set_time(m.deletionTimestamp, meta["deletionTimestamp"])
    if "deletionGracePeriodSeconds" in meta:
        m.deletionGracePeriodSeconds = meta["deletionGracePeriodSeconds"]
    m.labels.update(meta.get("labels", {}))
    m.annotations.update(meta.get("annotations", {}))
    for r in meta.get("ownerReferences", []):
        o = m.ownerReferences.add()
        o.kind, o.name, o.uid, o.apiVersion = r["kind"], r["name"], r["uid"], r["apiVersion"]
        if "controller" in r:
            o.controller = r["controller"]
        if "blockOwnerDeletion" in r:
            o.blockOwnerDeletion = r["blockOwnerDeletion"]
    m.finalizers.extend(meta.get("finalizers", []))
    for e in meta.get("managedFields", []):
        f = m.managedFields.add()
        f.manager = e.get("manager", "")
        f.operation = e.get("operation", "")
        f.apiVersion = e.get("apiVersion", "")
        if e.get("time"):
            set_time(f.time, e["time"])
        f.fieldsType = e.get("fieldsType", "")
        if "fieldsV1" in e:
            f.fieldsV1.Raw = json.dumps(e["fieldsV1"], separators=(",", ":")).encode()
        f.subresource = e.get("subresource", "")
    for k, v in doc.get("data", {}).items():
        s.data[k] = base64.b64decode(v)
    s.type = doc.get("type", "")
    if "immutable" in doc:
        s.immutable = doc["immutable"]
    u = pb.Unknown()
    u.typeMeta.apiVersion = "v1"
    u.typeMeta.kind = "Secret"
    u.raw = s.SerializeToString(deterministic=True)
    u.contentEncoding = ""
    u.contentType = ""
    return MAGIC + u.SerializeToString(deterministic=True)


def decode_secret(hex_body):
    body = bytes.fromhex(hex_body.strip())
    assert body[:4] == MAGIC, "no k8s\\0 prefix"
    u = pb.Unknown()
    u.ParseFromString(body[4:])
    s = pb.Secret()
    s.ParseFromString(u.raw)
    m = s.metadata
    return {
        "typeMeta": {"apiVersion": u.typeMeta.apiVersion, "kind": u.typeMeta.kind},
        "name": m.name, "namespace": m.namespace, "uid": m.uid,
        "resourceVersion": m.resourceVersion,
        "creationTimestamp": rfc3339(m.creationTimestamp.seconds) if m.HasField("creationTimestamp") else None,
        "labels": dict(m.labels), "annotations": dict(m.annotations),
        "ownerReferences": [{"apiVersion": r.apiVersion, "kind": r.kind, "name": r.name, "uid": r.uid,
                             "controller": r.controller if r.HasField("controller") else None}
                            for r in m.ownerReferences],
        "finalizers": list(m.finalizers),
        "managedFields": [{"manager": e.manager, "operation": e.operation, "apiVersion": e.apiVersion,
                           "time": rfc3339(e.time.seconds), "fieldsType": e.fieldsType,
                           "fieldsV1": json.loads(e.fieldsV1.Raw)} for e in m.managedFields],
        "data": {k: b64(v) for k, v in s.data.items()},
        "stringData": dict(s.stringData),
        "type": s.type,
        "immutable": s.immutable if s.HasField("immutable") else None,
    }


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "cases"
    if mode == "cases":
        print(json.dumps(cases()))
    elif mode == "decode-secret":
        print(json.dumps(decode_secret(sys.stdin.read())))
    elif mode == "storage-secret":
        print(storage_secret(json.load(sys.stdin)).hex())
    else:
        raise SystemExit(f"unknown mode {mode}")
