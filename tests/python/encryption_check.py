#!/usr/bin/env python3
"""Live cross-check of keyward's encryption providers against independent Python implementations.

Reads the values keyward wrote (--written), decrypts each one with kw_encryption.py (cryptography,
PyNaCl; for KMS the plugin's own Decrypt over gRPC) and checks it equals the plaintext. For
aesgcm, kms-v1 and kms-v2 it also checks that the value does not decrypt under a different storage
key (a value moved to another etcd key must fail its AAD check). Then it encrypts every plaintext
itself with the same key or KMS plugin and fresh randomness and writes the results to --out, for
keyward to read back.

Input (--written) and output (--out) share one schema; binary values are standard base64:
  {"cases": [case, ...]}
  case: provider ("identity" | "aescbc" | "aesgcm" | "secretbox" | "kms-v1" | "kms-v2"),
        storage_key, plaintext, stored
        + aescbc / aesgcm / secretbox: key_name, key
        + kms-v1 / kms-v2: kms_name, socket (the plugin's Unix socket path)
Output cases copy every input field except "stored", which is the value written here. A case that
could not be encrypted here is left out of --out (and counted as a failure).

Usage: encryption_check.py --written FILE --out FILE [--timeout SECONDS]
Prints one line per check and ends with "encryption_check: N passed, M failed"; exits 1 on any
failure or if nothing was checked.
Requires: python3 -m pip install -r tests/python/requirements.txt
"""

import argparse
import base64
import json
import os
import sys
import traceback

import grpc
from cryptography.exceptions import InvalidTag

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kw_encryption as kw  # noqa: E402

PROVIDERS = ("identity", "aescbc", "aesgcm", "secretbox", "kms-v1", "kms-v2")
AAD_PROVIDERS = ("aesgcm", "kms-v1", "kms-v2")


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


def b64(b):
    return base64.b64encode(b).decode("ascii")


def unb64(s):
    return base64.b64decode(s, validate=True)


def err_text(e):
    if isinstance(e, InvalidTag):
        return "InvalidTag (AES-GCM authentication failed)"
    if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return f"KMS plugin gRPC error {e.code().name}: {e.details()}"
    return f"{type(e).__name__}: {e}"


def moved_key(storage_key):
    return storage_key + "-moved"


class Case:
    """One input case, with lazily opened KMS clients shared per socket."""

    def __init__(self, pb, clients, raw, timeout):
        self.raw = raw
        self.provider = raw["provider"]
        self.storage_key = raw["storage_key"]
        self.plaintext = unb64(raw["plaintext"])
        self.stored = unb64(raw["stored"])
        self.pb = pb
        if self.provider in ("aescbc", "aesgcm", "secretbox"):
            self.key_name = raw["key_name"]
            self.key = unb64(raw["key"])
        elif self.provider in ("kms-v1", "kms-v2"):
            self.kms_name = raw["kms_name"]
            sock = raw["socket"]
            if sock not in clients:
                clients[sock] = kw.KmsClient(pb, sock, timeout)
            self.client = clients[sock]

    def decrypt(self, storage_key=None):
        """Returns (plaintext, unwrapped DEK/seed or None)."""
        sk = self.storage_key if storage_key is None else storage_key
        p, s = self.provider, self.stored
        if p == "identity":
            return kw.identity_decrypt(s), None
        if p == "aescbc":
            return kw.aescbc_decrypt(self.key_name, self.key, s), None
        if p == "aesgcm":
            return kw.aesgcm_decrypt(self.key_name, self.key, sk, s), None
        if p == "secretbox":
            return kw.secretbox_decrypt(self.key_name, self.key, s), None
        if p == "kms-v1":
            return kw.kms_v1_decrypt(self.kms_name, sk, s, self.client.v1_unwrap)
        if p == "kms-v2":
            pt, _, seed = kw.kms_v2_decrypt(self.pb, self.kms_name, sk, s, self.client.v2_unwrap)
            return pt, seed
        raise ValueError(f"unknown provider {p!r}")

    def open_moved(self, secret):
        """Decrypts under a different storage key, reusing the DEK/seed already unwrapped so that
        only the AES-GCM AAD check can make it fail. Returns the plaintext (it should raise)."""
        sk = moved_key(self.storage_key)
        if self.provider == "aesgcm":
            return kw.aesgcm_decrypt(self.key_name, self.key, sk, self.stored)
        if self.provider == "kms-v1":
            _, data = kw.kms_v1_parse(self.kms_name, self.stored)
            return kw.gcm_open(secret, data, sk)
        if self.provider == "kms-v2":
            obj = kw.kms_v2_parse(self.pb, self.kms_name, self.stored)
            return kw.kms_v2_open(obj, secret, sk)
        raise ValueError(self.provider)

    def encrypt(self):
        """Encrypts the plaintext with fresh randomness; returns the stored bytes."""
        p, pt, sk = self.provider, self.plaintext, self.storage_key
        if p == "identity":
            return kw.identity_encrypt(pt)
        if p == "aescbc":
            return kw.aescbc_encrypt(self.key_name, self.key, pt, os.urandom(16))
        if p == "aesgcm":
            return kw.aesgcm_encrypt(self.key_name, self.key, sk, pt, os.urandom(12))
        if p == "secretbox":
            return kw.secretbox_encrypt(self.key_name, self.key, pt, os.urandom(24))
        if p == "kms-v1":
            dek = os.urandom(32)
            wrapped = self.client.v1_wrap(dek)
            return kw.kms_v1_encrypt(self.kms_name, dek, wrapped, sk, pt, os.urandom(12))
        if p == "kms-v2":
            seed = os.urandom(32)
            ct, key_id, ann = self.client.v2_wrap(seed)
            return kw.kms_v2_encrypt(self.pb, self.kms_name, seed, key_id, ct, ann, sk, pt,
                                     os.urandom(32), os.urandom(12))
        raise ValueError(f"unknown provider {p!r}")


def check_case(c, i, raw, pb, clients, timeout, out_cases):
    label = f"[{i}] {raw.get('provider')!s} {raw.get('storage_key')!s}"
    try:
        case = Case(pb, clients, raw, timeout)
    except Exception as e:  # noqa: BLE001
        c.check(f"{label}: case is well-formed", False, err_text(e))
        return
    if not c.check(f"{label}: provider is known", case.provider in PROVIDERS,
                   repr(case.provider)):
        return

    # 1. keyward's value decrypts to the plaintext.
    secret = None
    try:
        got, secret = case.decrypt()
        c.check(f"{label}: keyward's value decrypts to the plaintext ({len(case.plaintext)} bytes)",
                got == case.plaintext,
                f"got {len(got)} bytes that differ from the {len(case.plaintext)}-byte plaintext")
    except Exception as e:  # noqa: BLE001
        c.check(f"{label}: keyward's value decrypts to the plaintext", False, err_text(e))
        got = None

    if case.provider == "kms-v2":
        try:
            obj = kw.kms_v2_parse(pb, case.kms_name, case.stored)
            c.check(f"{label}: EncryptedObject uses HKDF_SHA256_XNONCE_AES_GCM_SEED",
                    obj.encryptedDEKSourceType == kw.HKDF_SHA256_XNONCE_AES_GCM_SEED,
                    f"encryptedDEKSourceType {obj.encryptedDEKSourceType}")
            # Informational: prost and Python may order map entries differently; both parse.
            canon = obj.SerializeToString(deterministic=True)
            body = case.stored[len(kw.keyed_prefix(kw.PREFIX_KMS_V2, case.kms_name)):]
            print(f"     (EncryptedObject {'is' if canon == body else 'is NOT'} byte-identical "
                  f"to Python's deterministic serialisation; keyID {obj.keyID!r}, "
                  f"{len(obj.annotations)} annotations)", flush=True)
        except Exception as e:  # noqa: BLE001
            c.check(f"{label}: EncryptedObject parses", False, err_text(e))

    # 2. The AAD binds the value to its storage key.
    if case.provider in AAD_PROVIDERS:
        name = f"{label}: decrypting under a different storage key fails (AAD)"
        if got is None or (case.provider != "aesgcm" and secret is None):
            c.check(name, False, "skipped: the value did not decrypt under its own key")
        else:
            try:
                case.open_moved(secret)
                c.check(name, False, "decrypted under " + repr(moved_key(case.storage_key)))
            except InvalidTag:
                c.check(name, True)
            except Exception as e:  # noqa: BLE001
                c.check(name, False, "failed, but not with an authentication error: " + err_text(e))

    # 3. Our own encryption of the same plaintext, for keyward to read back.
    try:
        mine = case.encrypt()
        back, _ = Case(pb, clients, dict(raw, stored=b64(mine)), timeout).decrypt()
        if c.check(f"{label}: own encryption written (and reads back here)",
                   back == case.plaintext, "own value does not read back"):
            out_cases.append(dict(raw, stored=b64(mine)))
    except Exception as e:  # noqa: BLE001
        c.check(f"{label}: own encryption written", False, err_text(e))


def run(args, c):
    with open(args.written) as f:
        doc = json.load(f)
    cases = doc.get("cases")
    if not c.check(f"{args.written} has a non-empty \"cases\" list",
                   isinstance(cases, list) and len(cases) > 0, repr(type(cases))):
        return
    pb = kw.compile_protos()
    clients = {}
    out_cases = []
    try:
        for i, raw in enumerate(cases):
            check_case(c, i, raw, pb, clients, args.timeout, out_cases)
    finally:
        for cl in clients.values():
            cl.close()
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"cases": out_cases}, f, indent=2)
            f.write("\n")
        os.replace(tmp, args.out)
        print(f"     (wrote {len(out_cases)} of {len(cases)} cases to {args.out})", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--written", required=True, help="JSON file of values keyward wrote")
    ap.add_argument("--out", required=True, help="JSON file for the values written here")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-call KMS deadline, seconds")
    args = ap.parse_args()
    c = Checks()
    try:
        run(args, c)
    except Exception as e:  # noqa: BLE001 - report any crash as a failed check
        traceback.print_exc()
        c.check("encryption_check ran to the end", False, err_text(e))
    print(f"encryption_check: {c.passed} passed, {c.failed} failed", flush=True)
    return 1 if c.failed or c.passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
