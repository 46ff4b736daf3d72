#!/usr/bin/env python3
"""Generates tests/data/encryption_vectors.json, known-answer vectors for keyward's providers.

The vectors come from the independent Python implementations in kw_encryption.py (cryptography
and PyNaCl, no keyward code). keyward's Rust tests feed each vector's key and "random" bytes into
the matching writer and must produce "stored" byte for byte, and must read "stored" back to
"plaintext".

All inputs are fixed and obviously fake: every key, plaintext and random byte string is a SHA-256
stream of "<vector name>:<label>:<counter>", so running this script twice gives an identical file.
None of these keys protects anything.

File layout:
  {"generator": "tests/python/encryption_vectors.py (Python cryptography X.Y.Z, PyNaCl X.Y.Z)",
   "vectors": [vector, ...]}
Each vector (binary values are standard base64 with padding):
  name, provider ("identity" | "aescbc" | "aesgcm" | "secretbox" | "kms-v1" | "kms-v2"),
  storage_key (the etcd key; the AES-GCM AAD for aesgcm, kms-v1 and kms-v2),
  plaintext, random, stored
  + aescbc / aesgcm / secretbox: key_name, key
  + kms-v1: kms_name, dek, wrapped_dek (stands for the plugin's v1beta1 Encrypt(dek).cipher)
  + kms-v2: kms_name, seed, key_id, encrypted_dek_source (stands for the plugin's v2
            Encrypt(seed).ciphertext), annotations ({name: base64 value}; stands for the
            plugin's EncryptResponse.annotations)

"random" is exactly the bytes the writer draws from its random source, concatenated in draw order:
  identity   nothing ("")
  aescbc     IV (16)
  aesgcm     nonce (12)
  secretbox  nonce (24)
  kms-v1     nonce (12)            (the per-write DEK is given separately in "dek")
  kms-v2     info (32), nonce (12) (the seed is given separately in "seed")

The kms-v2 "stored" value is the prefix followed by EncryptedObject serialised with protobuf's
deterministic mode: fields in field-number order, proto3 defaults omitted, map entries sorted
by key.

Usage: encryption_vectors.py [--out FILE] [--check]
  --check compares FILE with freshly generated content instead of writing it (exit 1 if different).
Requires: python3 -m pip install -r tests/python/requirements.txt
"""

import argparse
import base64
import hashlib
import json
import os
import sys

import cryptography
import nacl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kw_encryption as kw  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "tests", "data", "encryption_vectors.json")


def fake(name, label, n):
    """n fixed bytes: SHA-256("<name>:<label>:0") | SHA-256("<name>:<label>:1") | ..., truncated."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{name}:{label}:{i}".encode()).digest()
        i += 1
    return out[:n]


def b64(b):
    return base64.b64encode(b).decode("ascii")


def unb64(s):
    return base64.b64decode(s, validate=True)


def storage_key_for(name):
    return f"/registry/secrets/default/{name}"


def base(name, provider, plaintext, random, stored):
    return {
        "name": name,
        "provider": provider,
        "storage_key": storage_key_for(name),
        "plaintext": b64(plaintext),
        "random": b64(random),
        "stored": b64(stored),
    }


def v_identity(name, n):
    # Looks like a protobuf-encoded object ("k8s\0" magic) but is just fake bytes.
    pt = (b"k8s\x00" + fake(name, "plaintext", n))[:n]
    return base(name, "identity", pt, b"", kw.identity_encrypt(pt))


def v_aescbc(name, key_size, n, key_name="key1"):
    key, pt, iv = fake(name, "key", key_size), fake(name, "plaintext", n), fake(name, "iv", 16)
    v = base(name, "aescbc", pt, iv, kw.aescbc_encrypt(key_name, key, pt, iv))
    v.update(key_name=key_name, key=b64(key))
    return v


def v_aesgcm(name, key_size, n, key_name="key1"):
    key, pt = fake(name, "key", key_size), fake(name, "plaintext", n)
    nonce = fake(name, "nonce", 12)
    stored = kw.aesgcm_encrypt(key_name, key, storage_key_for(name), pt, nonce)
    v = base(name, "aesgcm", pt, nonce, stored)
    v.update(key_name=key_name, key=b64(key))
    return v


def v_secretbox(name, n, key_name="key1"):
    key, pt, nonce = fake(name, "key", 32), fake(name, "plaintext", n), fake(name, "nonce", 24)
    v = base(name, "secretbox", pt, nonce, kw.secretbox_encrypt(key_name, key, pt, nonce))
    v.update(key_name=key_name, key=b64(key))
    return v


def v_kms_v1(name, n, kms_name="kw-kms"):
    pt, dek, nonce = fake(name, "plaintext", n), fake(name, "dek", 32), fake(name, "nonce", 12)
    wrapped = b"fake-wrapped-dek:" + fake(name, "wrapped_dek", 48)
    stored = kw.kms_v1_encrypt(kms_name, dek, wrapped, storage_key_for(name), pt, nonce)
    v = base(name, "kms-v1", pt, nonce, stored)
    v.update(kms_name=kms_name, dek=b64(dek), wrapped_dek=b64(wrapped))
    return v


def v_kms_v2(pb, name, n, annotations, kms_name="kw-kms-v2"):
    pt, seed = fake(name, "plaintext", n), fake(name, "seed", 32)
    info, nonce = fake(name, "info", 32), fake(name, "nonce", 12)
    key_id = "kw-1-" + fake(name, "key_id", 16).hex()
    eds = b"fake-encrypted-dek-source:" + fake(name, "encrypted_dek_source", 60)
    stored = kw.kms_v2_encrypt(pb, kms_name, seed, key_id, eds, annotations, storage_key_for(name),
                               pt, info, nonce)
    v = base(name, "kms-v2", pt, info + nonce, stored)
    v.update(kms_name=kms_name, seed=b64(seed), key_id=key_id, encrypted_dek_source=b64(eds),
             annotations={k: b64(annotations[k]) for k in sorted(annotations)})
    return v


def build(pb):
    vs = [v_identity("identity-len64", 64)]
    for n in (1, 15, 16, 17, 1024):
        vs.append(v_aescbc(f"aescbc-k32-len{n}", 32, n))
    vs += [
        v_aescbc("aescbc-k16-len1", 16, 1),
        v_aescbc("aescbc-k16-len17", 16, 17, key_name="key-16"),
        v_aescbc("aescbc-k24-len16", 24, 16),
        v_aescbc("aescbc-k24-len1024", 24, 1024, key_name="key-24"),
    ]
    for size in (16, 24, 32):
        for n in (1, 16, 1024):
            vs.append(v_aesgcm(f"aesgcm-k{size}-len{n}", size, n))
    for n in (1, 16, 1024):
        vs.append(v_secretbox(f"secretbox-len{n}", n))
    vs += [v_kms_v1("kms-v1-len1", 1), v_kms_v1("kms-v1-len1024", 1024)]
    two = {
        # Deliberately not in sorted order: the serialiser must sort map entries.
        "version.encryption.remote.io": b"1",
        "a.example.com": b"fake annotation value \x00\xff",
    }
    vs += [v_kms_v2(pb, "kms-v2-len1", 1, {}),
           v_kms_v2(pb, "kms-v2-len1024-annotations", 1024, two)]
    return vs


def verify(pb, v):
    """Reads one vector back with the independent readers; raises on any mismatch."""
    pt, stored, rnd = unb64(v["plaintext"]), unb64(v["stored"]), unb64(v["random"])
    sk = v["storage_key"]
    p = v["provider"]
    moved = sk + "-moved"
    if p == "identity":
        assert rnd == b"" and kw.identity_decrypt(stored) == pt
    elif p == "aescbc":
        key = unb64(v["key"])
        assert len(rnd) == 16 and kw.aescbc_decrypt(v["key_name"], key, stored) == pt
        prefix = kw.keyed_prefix(kw.PREFIX_AESCBC, v["key_name"])
        assert len(stored) == len(prefix) + 16 + (len(pt) // 16 + 1) * 16  # always padded
    elif p == "aesgcm":
        key = unb64(v["key"])
        assert len(rnd) == 12 and kw.aesgcm_decrypt(v["key_name"], key, sk, stored) == pt
        expect_fail(lambda: kw.aesgcm_decrypt(v["key_name"], key, moved, stored))
    elif p == "secretbox":
        key = unb64(v["key"])
        assert len(rnd) == 24 and kw.secretbox_decrypt(v["key_name"], key, stored) == pt
    elif p == "kms-v1":
        dek, wrapped = unb64(v["dek"]), unb64(v["wrapped_dek"])

        def unwrap(w):
            assert w == wrapped
            return dek
        got, _ = kw.kms_v1_decrypt(v["kms_name"], sk, stored, unwrap)
        assert len(rnd) == 12 and got == pt
        expect_fail(lambda: kw.kms_v1_decrypt(v["kms_name"], moved, stored, unwrap))
    elif p == "kms-v2":
        seed, eds = unb64(v["seed"]), unb64(v["encrypted_dek_source"])
        ann = {k: unb64(x) for k, x in v["annotations"].items()}

        def unwrap(obj):
            assert obj.encryptedDEKSource == eds and obj.keyID == v["key_id"]
            assert dict(obj.annotations) == ann
            return seed
        got, obj, _ = kw.kms_v2_decrypt(pb, v["kms_name"], sk, stored, unwrap)
        assert len(rnd) == 44 and got == pt
        assert obj.encryptedDEKSourceType == kw.HKDF_SHA256_XNONCE_AES_GCM_SEED
        assert obj.encryptedData[:32] == rnd[:32] and obj.encryptedData[32:44] == rnd[32:]
        prefix = kw.keyed_prefix(kw.PREFIX_KMS_V2, v["kms_name"])
        # The protobuf round-trips: re-serialising the parsed object gives the same bytes.
        assert prefix + obj.SerializeToString(deterministic=True) == stored
        expect_fail(lambda: kw.kms_v2_decrypt(pb, v["kms_name"], moved, stored, unwrap))
    else:
        raise AssertionError(f"unknown provider {p}")


def expect_fail(fn):
    from cryptography.exceptions import InvalidTag

    try:
        fn()
    except InvalidTag:
        return
    raise AssertionError("decrypting under a different storage key (AAD) did not fail")


def render(pb):
    vectors = build(pb)
    for v in vectors:
        verify(pb, v)
    doc = {
        "generator": f"tests/python/encryption_vectors.py (Python cryptography "
                     f"{cryptography.__version__}, PyNaCl {nacl.__version__})",
        "vectors": vectors,
    }
    return json.dumps(doc, indent=2) + "\n", vectors


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output file (default {DEFAULT_OUT})")
    ap.add_argument("--check", action="store_true",
                    help="compare --out with freshly generated content instead of writing it")
    args = ap.parse_args()
    pb = kw.compile_protos()
    text, vectors = render(pb)
    if args.check:
        try:
            with open(args.out) as f:
                same = f.read() == text
        except FileNotFoundError:
            same = False
        print(f"encryption_vectors: {args.out} is {'up to date' if same else 'OUT OF DATE'}")
        return 0 if same else 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    counts = {}
    for v in vectors:
        counts[v["provider"]] = counts.get(v["provider"], 0) + 1
    print(f"encryption_vectors: wrote {len(vectors)} vectors to {args.out} "
          f"({', '.join(f'{k} {n}' for k, n in counts.items())}); all read back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
