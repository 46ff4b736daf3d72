#!/usr/bin/env python3
"""Drive keyward's KMS plugin the way kube-apiserver does, with an independent Python client.

Stubs are generated at run time with grpc_tools.protoc from the repository's proto/ files (and a
small standard gRPC health proto written here), so the client shares no code with the plugin.

Checks follow what kube-apiserver validates (shared design facts §2.2 Status, §2.3 Encrypt), plus
KEK rotation through keyward's admin API, the KMS v1 API and the standard gRPC health service.

Usage: kms_flow.py --socket KMS_SOCKET --admin-socket ADMIN_SOCKET [--timeout SECONDS]
Prints one line per check and ends with "kms_flow: N passed, M failed"; exits 1 on any failure.
Requires: python3 -m pip install -r tests/python/requirements.txt
"""

import argparse
import importlib
import os
import re
import secrets
import sys
import tempfile
import uuid

import grpc
from grpc_tools import protoc

PROTO_ROOT = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
)
PROTO_FILES = [
    "kms/v2/api.proto",
    "kms/v1beta1/api.proto",
    "keyward/v1/kms_admin.proto",
]

# The standard gRPC health protocol (grpc/health/v1/health.proto), restated. Written under a file
# name that does not start a "grpc" package, so that the generated module cannot shadow grpcio.
HEALTH_PROTO_NAME = "kw_interop_health.proto"
HEALTH_PROTO = """\
syntax = "proto3";

package grpc.health.v1;

message HealthCheckRequest {
  string service = 1;
}

message HealthCheckResponse {
  enum ServingStatus {
    UNKNOWN = 0;
    SERVING = 1;
    NOT_SERVING = 2;
    SERVICE_UNKNOWN = 3;
  }
  ServingStatus status = 1;
}

service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
}
"""

# kube-apiserver limits (k8s.io/apiserver kmsv2/envelope.go).
KEY_ID_MAX = 1024
ENCRYPTED_DEK_SOURCE_MAX = 1024
ANNOTATIONS_MAX = 32 * 1024
# keyward's plaintext limit.
MAX_PLAINTEXT = 64 * 1024

KEY_ID_RE = re.compile(r"^kw-([0-9]+)-[0-9a-f]{32}$")
# semver.org's suggested regular expression.
SEMVER_RE = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
DNS1123_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN_RE = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)


def is_fqdn(name):
    """apimachinery validation.IsFullyQualifiedDomainName, as kube-apiserver applies it to
    annotation keys: strip one trailing dot, DNS-1123 subdomain (<= 253 chars), at least two
    dot-separated segments, each a DNS-1123 label (<= 63 chars)."""
    if not name:
        return False
    if name.endswith("."):
        name = name[:-1]
    if len(name) > 253 or not DNS1123_SUBDOMAIN_RE.match(name):
        return False
    labels = name.split(".")
    if len(labels) < 2:
        return False
    return all(len(label) <= 63 and DNS1123_LABEL_RE.match(label) for label in labels)


def key_id_valid(key_id):
    """kmsv2.ValidateKeyID: non-empty and at most 1024 bytes."""
    return bool(key_id) and len(key_id.encode("utf-8")) <= KEY_ID_MAX


def key_seq(key_id):
    m = KEY_ID_RE.match(key_id)
    return int(m.group(1)) if m else None


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok   {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail}" if detail else ""), flush=True)
        return ok


def generate_stubs(out_dir):
    """Runs protoc (from grpcio-tools) into out_dir and returns the imported modules."""
    health_dir = os.path.join(out_dir, "_health_src")
    os.makedirs(health_dir)
    with open(os.path.join(health_dir, HEALTH_PROTO_NAME), "w") as f:
        f.write(HEALTH_PROTO)
    gen_dir = os.path.join(out_dir, "gen")
    os.makedirs(gen_dir)
    for p in PROTO_FILES:
        if not os.path.isfile(os.path.join(PROTO_ROOT, p)):
            raise SystemExit(f"kms_flow: missing proto file {os.path.join(PROTO_ROOT, p)}")
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={health_dir}",
        f"--python_out={gen_dir}",
        f"--grpc_python_out={gen_dir}",
        *PROTO_FILES,
        HEALTH_PROTO_NAME,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"kms_flow: protoc failed with exit code {rc}: {' '.join(args)}")
    # Make the generated directories regular packages, so that an unrelated installed "kms" or
    # "keyward" package cannot shadow them.
    for pkg in ["kms", "kms/v2", "kms/v1beta1", "keyward", "keyward/v1"]:
        open(os.path.join(gen_dir, pkg, "__init__.py"), "a").close()
    sys.path.insert(0, gen_dir)
    importlib.invalidate_caches()
    mods = {}
    for name in [
        "kms.v2.api_pb2",
        "kms.v2.api_pb2_grpc",
        "kms.v1beta1.api_pb2",
        "kms.v1beta1.api_pb2_grpc",
        "keyward.v1.kms_admin_pb2",
        "keyward.v1.kms_admin_pb2_grpc",
        HEALTH_PROTO_NAME[: -len(".proto")] + "_pb2",
        HEALTH_PROTO_NAME[: -len(".proto")] + "_pb2_grpc",
    ]:
        mods[name] = importlib.import_module(name)
    return mods


def channel(path):
    # As kube-apiserver: unix endpoint, insecure credentials, authority "localhost".
    return grpc.insecure_channel(
        "unix://" + path, options=[("grpc.default_authority", "localhost")]
    )


class TransportFailure(Exception):
    """The plugin stopped answering; no later check can mean anything."""


def rpc_error(fn, *args, **kwargs):
    """Calls fn; returns (None, response) on success or (RpcError, None) on a gRPC error.

    UNAVAILABLE and DEADLINE_EXCEEDED abort the run instead: they mean the plugin is gone or
    stuck, and counting them as the "expected error" of a negative check would hide that."""
    try:
        return None, fn(*args, **kwargs)
    except grpc.RpcError as e:
        if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            raise TransportFailure(f"plugin not answering ({describe(e)})") from e
        return e, None


def describe(err):
    if err is None:
        return "no error"
    return f"{err.code().name}: {err.details()}"


def run(args, c):
    with tempfile.TemporaryDirectory(prefix="kms_flow_") as tmp:
        m = generate_stubs(tmp)
        v2 = m["kms.v2.api_pb2"]
        v1 = m["kms.v1beta1.api_pb2"]
        adm = m["keyward.v1.kms_admin_pb2"]
        hp = m["kw_interop_health_pb2"]
        c.check("stubs generated from proto/ with grpc_tools.protoc", True)

        # The checker's own FQDN rule, against apiserver's envelope_test.go cases.
        good = ["a.com", "k8s.io", "10.0.0.1", "version.encryption.remote.io", "a.com."]
        bad = ["com", "Dev.k8s.io", "*.example.com", "underscores_are_bad.k8s.io",
               "http://foo.example.com", "kms.example.io/remote-kms-auditid", ""]
        wrong = [n for n in good if not is_fqdn(n)] + [n for n in bad if is_fqdn(n)]
        c.check("FQDN checker agrees with apiserver's test cases", not wrong, f"misjudged {wrong}")

        kms_ch = channel(args.socket)
        admin_ch = channel(args.admin_socket)
        t = args.timeout
        call = dict(timeout=t, wait_for_ready=True)
        v2s = m["kms.v2.api_pb2_grpc"].KeyManagementServiceStub(kms_ch)
        v1s = m["kms.v1beta1.api_pb2_grpc"].KeyManagementServiceStub(kms_ch)
        hs = m["kw_interop_health_pb2_grpc"].HealthStub(kms_ch)
        admin = m["keyward.v1.kms_admin_pb2_grpc"].KmsAdminStub(admin_ch)
        admin_on_kms = m["keyward.v1.kms_admin_pb2_grpc"].KmsAdminStub(kms_ch)

        # --- gRPC health ---
        err, r = rpc_error(hs.Check, hp.HealthCheckRequest(service=""), **call)
        c.check('health Check(service="") is SERVING',
                err is None and r.status == hp.HealthCheckResponse.SERVING,
                describe(err) if err else f"status {r.status}")
        err, r = rpc_error(hs.Check, hp.HealthCheckRequest(service="no.such.Service"), **call)
        c.check("health Check(unknown service) is NOT_FOUND",
                err is not None and err.code() == grpc.StatusCode.NOT_FOUND,
                describe(err) if err else f"answered status {r.status}")

        # --- clients other than grpc-go: gRPC C-core (this grpcio) sends the socket's path as
        # :authority unless told otherwise; the plugin answers them too (h2 alone would reset
        # the stream), call after call on one channel (HPACK's dynamic table in use) ---
        for target in ("unix://" + args.socket, "unix:" + args.socket):
            plain = m["kms.v2.api_pb2_grpc"].KeyManagementServiceStub(grpc.insecure_channel(target))
            errs = [rpc_error(plain.Status, v2.StatusRequest(), **call)[0] for _ in range(3)]
            c.check(f"v2 Status over {target} with grpcio's default authority",
                    errs == [None] * 3, "; ".join(describe(e) for e in errs if e))
        plain_admin = m["keyward.v1.kms_admin_pb2_grpc"].KmsAdminStub(
            grpc.insecure_channel("unix://" + args.admin_socket))
        err, _ = rpc_error(plain_admin.Status, adm.AdminStatusRequest(), **call)
        c.check("KmsAdmin Status with grpcio's default authority", err is None, describe(err))

        # --- the admin API is not on the apiserver's socket ---
        err, _ = rpc_error(admin_on_kms.Status, adm.AdminStatusRequest(), **call)
        c.check("KmsAdmin is not served on the KMS socket (UNIMPLEMENTED)",
                err is not None and err.code() == grpc.StatusCode.UNIMPLEMENTED, describe(err))

        # --- KMS v2 Status (§2.2) ---
        err, st = rpc_error(v2s.Status, v2.StatusRequest(), **call)
        if not c.check("v2 Status answers", err is None, describe(err)):
            return
        c.check('v2 Status version == "v2"', st.version == "v2", repr(st.version))
        c.check('v2 Status healthz == "ok"', st.healthz == "ok", repr(st.healthz))
        key1 = st.key_id
        c.check("v2 Status key_id non-empty and <= 1024 bytes", key_id_valid(key1), repr(key1))
        c.check("v2 Status key_id looks like kw-<seq>-<32 hex>", key_seq(key1) is not None,
                repr(key1))

        # --- KMS v2 Encrypt of a 32-byte seed (§2.3) ---
        seed = secrets.token_bytes(32)
        uid = str(uuid.uuid4())
        err, enc = rpc_error(v2s.Encrypt, v2.EncryptRequest(plaintext=seed, uid=uid), **call)
        if not c.check("v2 Encrypt(32-byte seed) answers", err is None, describe(err)):
            return
        ct1 = enc.ciphertext
        c.check("v2 Encrypt ciphertext non-empty and <= 1024 bytes",
                0 < len(ct1) <= ENCRYPTED_DEK_SOURCE_MAX, f"{len(ct1)} bytes")
        c.check("v2 Encrypt ciphertext is not the plaintext", seed not in ct1)
        c.check("v2 Encrypt key_id valid", key_id_valid(enc.key_id), repr(enc.key_id))
        c.check("v2 Encrypt key_id == Status key_id", enc.key_id == key1,
                f"encrypt {enc.key_id!r} != status {key1!r}")
        ann = dict(enc.annotations)
        bad_keys = [k for k in ann if not is_fqdn(k)]
        c.check("v2 Encrypt annotation keys are FQDNs", not bad_keys, repr(bad_keys))
        ann_size = sum(len(k.encode("utf-8")) + len(v) for k, v in ann.items())
        c.check("v2 Encrypt annotations total <= 32768 bytes", ann_size <= ANNOTATIONS_MAX,
                f"{ann_size} bytes")
        err, enc_again = rpc_error(v2s.Encrypt, v2.EncryptRequest(plaintext=seed, uid=uid), **call)
        c.check("v2 Encrypt of the same seed twice gives different ciphertexts",
                err is None and enc_again.ciphertext != ct1, describe(err))

        def v2_decrypt(ct, key_id, annotations=ann):
            return rpc_error(v2s.Decrypt, v2.DecryptRequest(
                ciphertext=ct, uid=str(uuid.uuid4()), key_id=key_id, annotations=annotations),
                **call)

        err, dec = v2_decrypt(ct1, key1)
        c.check("v2 Decrypt(uid, key_id, annotations) returns the seed",
                err is None and dec.plaintext == seed, describe(err) if err else "wrong plaintext")

        # Tampering: every single-byte change must fail with a gRPC error, never return data.
        bad_pos = []
        codes = set()
        for i in range(len(ct1)):
            t_ct = bytearray(ct1)
            t_ct[i] ^= 0x01
            err, dec = v2_decrypt(bytes(t_ct), key1)
            if err is None:
                bad_pos.append(i)
            else:
                codes.add(err.code().name)
        c.check(f"v2 Decrypt fails with a gRPC error for each of {len(ct1)} one-byte tampers",
                not bad_pos, f"answered for byte positions {bad_pos}")
        print(f"     (tamper error codes: {sorted(codes)})", flush=True)
        for label, t_ct in [("truncated", ct1[:-1]), ("extended", ct1 + b"\x00"),
                            ("empty", b"")]:
            err, _ = v2_decrypt(t_ct, key1)
            c.check(f"v2 Decrypt of {label} ciphertext fails", err is not None)

        other_key = "kw-999999-" + secrets.token_hex(16)
        err, _ = v2_decrypt(ct1, other_key)
        c.check("v2 Decrypt with a wrong key_id fails", err is not None, "answered")
        err, _ = v2_decrypt(ct1, "")
        c.check("v2 Decrypt with an empty key_id fails", err is not None, "answered")

        # Size limits.
        for label, pt in [("empty plaintext", b""),
                          ("64 KiB + 1 plaintext", secrets.token_bytes(MAX_PLAINTEXT + 1))]:
            err, _ = rpc_error(v2s.Encrypt, v2.EncryptRequest(plaintext=pt, uid=str(uuid.uuid4())),
                               **call)
            c.check(f"v2 Encrypt of {label} is INVALID_ARGUMENT",
                    err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT,
                    describe(err))
        big = secrets.token_bytes(MAX_PLAINTEXT)
        err, enc_big = rpc_error(v2s.Encrypt,
                                 v2.EncryptRequest(plaintext=big, uid=str(uuid.uuid4())), **call)
        if c.check("v2 Encrypt of exactly 64 KiB succeeds", err is None, describe(err)):
            err, dec = v2_decrypt(enc_big.ciphertext, enc_big.key_id, dict(enc_big.annotations))
            c.check("v2 Decrypt of the 64 KiB ciphertext round-trips",
                    err is None and dec.plaintext == big, describe(err))

        # --- KMS v1 (apiserver sends version "v1beta1" everywhere) ---
        err, ver = rpc_error(v1s.Version, v1.VersionRequest(version="v1beta1"), **call)
        if c.check("v1 Version answers", err is None, describe(err)):
            c.check('v1 Version version == "v1beta1"', ver.version == "v1beta1",
                    repr(ver.version))
            c.check("v1 Version runtime_name non-empty", bool(ver.runtime_name))
            c.check("v1 Version runtime_version is semver",
                    bool(SEMVER_RE.match(ver.runtime_version)), repr(ver.runtime_version))
        dek = secrets.token_bytes(32)
        err, v1enc = rpc_error(v1s.Encrypt, v1.EncryptRequest(version="v1beta1", plain=dek), **call)
        v1_cipher = None
        if c.check("v1 Encrypt(32-byte DEK) answers with a non-empty cipher",
                   err is None and len(v1enc.cipher) > 0, describe(err)):
            v1_cipher = v1enc.cipher
            err, v1dec = rpc_error(v1s.Decrypt,
                                   v1.DecryptRequest(version="v1beta1", cipher=v1_cipher), **call)
            c.check("v1 Decrypt returns the DEK", err is None and v1dec.plain == dek,
                    describe(err))
        # apiserver's v1 health probe: Encrypt("ping") then Decrypt.
        err, p = rpc_error(v1s.Encrypt, v1.EncryptRequest(version="v1beta1", plain=b"ping"), **call)
        if err is None:
            err, p = rpc_error(v1s.Decrypt, v1.DecryptRequest(version="v1beta1", cipher=p.cipher),
                               **call)
        c.check('v1 health probe Encrypt("ping") + Decrypt', err is None and p.plain == b"ping",
                describe(err))

        # --- rotation through the admin API ---
        err, ast = rpc_error(admin.Status, adm.AdminStatusRequest(), **call)
        c.check("admin Status primary_key_id == v2 Status key_id",
                err is None and ast.primary_key_id == key1, describe(err))
        err, rot = rpc_error(admin.Rotate, adm.RotateRequest(), **call)
        if not c.check("admin Rotate answers", err is None, describe(err)):
            return
        key2 = rot.primary.key_id
        c.check("admin Rotate previous_key_id == old key_id", rot.previous_key_id == key1,
                f"{rot.previous_key_id!r} != {key1!r}")
        c.check("admin Rotate primary is a new, valid key_id",
                key_id_valid(key2) and key2 != key1, repr(key2))
        c.check("admin Rotate primary state is KEY_STATE_PRIMARY",
                rot.primary.state == adm.KEY_STATE_PRIMARY, str(rot.primary.state))
        s1, s2 = key_seq(key1), key_seq(key2)
        c.check("rotated key_id sequence number increases",
                s1 is not None and s2 is not None and s2 > s1, f"{key1!r} -> {key2!r}")

        err, st2 = rpc_error(v2s.Status, v2.StatusRequest(), **call)
        if not c.check("v2 Status answers after rotation", err is None, describe(err)):
            return
        c.check("v2 Status after rotation reports the new key_id", st2.key_id == key2,
                f"{st2.key_id!r} != {key2!r}")
        c.check("v2 Status after rotation: version v2, healthz ok, key_id valid",
                st2.version == "v2" and st2.healthz == "ok" and key_id_valid(st2.key_id),
                f"{st2.version!r} {st2.healthz!r} {st2.key_id!r}")

        seed2 = secrets.token_bytes(32)
        err, enc2 = rpc_error(v2s.Encrypt,
                              v2.EncryptRequest(plaintext=seed2, uid=str(uuid.uuid4())), **call)
        if c.check("v2 Encrypt after rotation answers", err is None, describe(err)):
            c.check("v2 Encrypt after rotation returns the new key_id (== Status key_id)",
                    enc2.key_id == key2 == st2.key_id, f"{enc2.key_id!r}")
            c.check("v2 Encrypt after rotation ciphertext non-empty and <= 1024 bytes",
                    0 < len(enc2.ciphertext) <= ENCRYPTED_DEK_SOURCE_MAX,
                    f"{len(enc2.ciphertext)} bytes")
            ann2 = dict(enc2.annotations)
            c.check("v2 Encrypt after rotation annotations valid",
                    all(is_fqdn(k) for k in ann2)
                    and sum(len(k.encode()) + len(v) for k, v in ann2.items()) <= ANNOTATIONS_MAX,
                    repr(list(ann2)))
            err, dec = v2_decrypt(enc2.ciphertext, key2, ann2)
            c.check("v2 Decrypt of the new ciphertext with the new key_id",
                    err is None and dec.plaintext == seed2, describe(err))
            err, _ = v2_decrypt(enc2.ciphertext, key1, ann2)
            c.check("v2 Decrypt of the new ciphertext with the old key_id fails", err is not None)

        err, dec = v2_decrypt(ct1, key1)
        c.check("v2 Decrypt of the OLD ciphertext with the OLD key_id still works",
                err is None and dec.plaintext == seed, describe(err))
        err, _ = v2_decrypt(ct1, key2)
        c.check("v2 Decrypt of the old ciphertext with the new key_id fails", err is not None)
        if v1_cipher is not None:
            err, v1dec = rpc_error(v1s.Decrypt,
                                   v1.DecryptRequest(version="v1beta1", cipher=v1_cipher), **call)
            c.check("v1 Decrypt of a pre-rotation cipher still works",
                    err is None and v1dec.plain == dek, describe(err))

        err, lk = rpc_error(admin.ListKeys, adm.ListKeysRequest(), **call)
        if c.check("admin ListKeys answers", err is None, describe(err)):
            states = {k.key_id: k.state for k in lk.keys}
            c.check("admin ListKeys: old key DECRYPT_ONLY, new key PRIMARY",
                    states.get(key1) == adm.KEY_STATE_DECRYPT_ONLY
                    and states.get(key2) == adm.KEY_STATE_PRIMARY, repr(states))

        kms_ch.close()
        admin_ch.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True, help="the plugin's KMS socket")
    ap.add_argument("--admin-socket", required=True, help="the plugin's admin socket")
    ap.add_argument("--timeout", type=float, default=10.0,
                    help="per-call deadline in seconds (kube-apiserver's default is 3)")
    args = ap.parse_args()
    c = Checks()
    try:
        run(args, c)
    except Exception as e:  # noqa: BLE001 - report any crash as a failed check
        import traceback

        traceback.print_exc()
        c.check("kms_flow ran to the end", False, f"{type(e).__name__}: {e}")
    print(f"kms_flow: {c.passed} passed, {c.failed} failed", flush=True)
    return 1 if c.failed or c.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
