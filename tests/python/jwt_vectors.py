#!/usr/bin/env python3
"""Service account token vectors for keyward's JWT verifier, made without keyward's code.

`generate` writes tests/data/jwt_vectors.json: JWTs built by hand (JSON, base64url, and the
signatures of Python's `cryptography`, no JWT library), with the keys that verify them. keyward's
Rust tests (src/authn/serviceaccount.rs) must accept the good tokens with the claims given here
and refuse the bad ones. `verify` checks a token keyward signed, so the cross-check runs both
ways.

Every input is fixed and obviously fake, so running `generate` twice gives an identical file:
the P-256 private scalar is SHA-256("jwt-vectors:es256") mod n and ECDSA signatures are
deterministic (RFC 6979); the RSA primes are the first primes found from a SHA-256 stream, and
RSASSA-PKCS1-v1_5 is deterministic. None of these keys protects anything.

File layout (binary values are standard base64 with padding):
  {"generator": "...", "issuer", "audience", "iat", "exp",
   "keys": {"es256": {"spki", "pkcs8"}, "rs256": {"spki", "pkcs8"}},
   "tokens": [{"name", "token", "key" ("es256" | "rs256"), "valid" (bool),
               "claims" (the payload as signed)}]}

Usage:
  jwt_vectors.py generate [--out FILE] [--check]
      --check compares FILE with freshly generated content (exit 1 if different).
  jwt_vectors.py verify SPKI_BASE64 < TOKEN
      prints "ok <payload JSON>" if the ES256/RS256 signature verifies, exits 1 otherwise.
  jwt_vectors.py jwk SPKI_BASE64 < JWK
      prints "ok" if the JSON Web Key is that public key (with its kid), exits 1 otherwise.
Requires: python3 -m pip install -r tests/python/requirements.txt
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys

import cryptography
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "tests", "data", "jwt_vectors.json")

ISSUER = "https://issuer.example"
AUDIENCE = "keyward-test"
IAT = 1700000000
EXP = IAT + 3600
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64(b):
    return base64.b64encode(b).decode("ascii")


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def unb64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def stream(label, n):
    out, i = b"", 0
    while len(out) < n:
        out += hashlib.sha256(f"jwt-vectors:{label}:{i}".encode()).digest()
        i += 1
    return out[:n]


def is_probable_prime(n):
    if n < 2:
        return False
    small = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]
    for p in small:
        if n % p == 0:
            return n == p
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for a in small:  # deterministic bases, plus the size makes false positives negligible
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def prime_from(label, bits):
    counter = 0
    while True:
        c = int.from_bytes(stream(f"{label}:{counter}", bits // 8), "big")
        c |= (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if is_probable_prime(c) and (c - 1) % 65537 != 0:
            return c
        counter += 1


def es256_key():
    scalar = int.from_bytes(hashlib.sha256(b"jwt-vectors:es256").digest(), "big") % P256_N
    return ec.derive_private_key(scalar, ec.SECP256R1())


def rs256_key():
    e = 65537
    p, q = prime_from("rsa-p", 1024), prime_from("rsa-q", 1024)
    if p < q:
        p, q = q, p
    n = p * q
    d = pow(e, -1, (p - 1) * (q - 1))
    numbers = rsa.RSAPrivateNumbers(
        p=p, q=q, d=d, dmp1=d % (p - 1), dmq1=d % (q - 1), iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    )
    return numbers.private_key()


def spki(key):
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pkcs8(key):
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def kid(key):
    return b64url(hashlib.sha256(spki(key)).digest())


def sign_es256(key, msg):
    der = key.sign(msg, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign_rs256(key, msg):
    return key.sign(msg, padding.PKCS1v15(), hashes.SHA256())


def compact(header, claims, signer):
    h = b64url(json.dumps(header, separators=(",", ":")).encode())
    p = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{h}.{p}".encode()
    sig = signer(signing_input) if signer else b""
    return f"{h}.{p}.{b64url(sig)}"


def bound_claims(**over):
    c = {
        "aud": [AUDIENCE],
        "exp": EXP,
        "iat": IAT,
        "iss": ISSUER,
        "jti": "0b0c7a5e-1111-4222-8333-444455556666",
        "kubernetes.io": {
            "namespace": "prod",
            "serviceaccount": {"name": "app", "uid": "5e7c2a40-aaaa-4bbb-8ccc-dddddddddddd"},
        },
        "nbf": IAT,
        "sub": "system:serviceaccount:prod:app",
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def generate():
    ek, rk = es256_key(), rs256_key()
    es = lambda m: sign_es256(ek, m)  # noqa: E731
    rs = lambda m: sign_rs256(rk, m)  # noqa: E731
    # A typ header and a different key order than keyward writes: only the values matter.
    eh = {"typ": "JWT", "kid": kid(ek), "alg": "ES256"}
    rh = {"kid": kid(rk), "alg": "RS256"}
    tokens = []

    def add(name, key, valid, header, claims, signer):
        tokens.append(
            {"name": name, "key": key, "valid": valid, "claims": claims,
             "token": compact(header, claims, signer)}
        )

    add("es256", "es256", True, eh, bound_claims(), es)
    add("rs256", "rs256", True, rh, bound_claims(), rs)
    # "aud" as a single string is allowed by RFC 7519 (and go-jose).
    add("es256-aud-string", "es256", True, eh, bound_claims(aud=AUDIENCE), es)
    add("es256-no-kid", "es256", True, {"alg": "ES256"}, bound_claims(), es)
    add("es256-other-audience", "es256", False, eh, bound_claims(aud=["someone-else"]), es)
    add("es256-no-audience", "es256", False, eh, bound_claims(aud=None), es)
    # alg "none" with an empty signature, and HS256 keyed with the public key (the classic
    # algorithm-confusion attack): both must be refused.
    add("alg-none", "es256", False, {"alg": "none", "kid": kid(ek)}, bound_claims(), None)
    pem = ek.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs = lambda m: hmac.new(pem, m, hashlib.sha256).digest()  # noqa: E731
    add("hs256-public-key-as-secret", "es256", False,
        {"alg": "HS256", "kid": kid(ek)}, bound_claims(), hs)
    # Signed by the RSA key but labelled ES256 with the EC key's kid.
    add("alg-confusion-rs-as-es", "es256", False,
        {"alg": "ES256", "kid": kid(ek)}, bound_claims(), rs)
    return {
        "generator": f"tests/python/jwt_vectors.py (Python cryptography {cryptography.__version__})",
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "iat": IAT,
        "exp": EXP,
        "keys": {
            "es256": {"spki": b64(spki(ek)), "pkcs8": b64(pkcs8(ek))},
            "rs256": {"spki": b64(spki(rk)), "pkcs8": b64(pkcs8(rk))},
        },
        "tokens": tokens,
    }


def verify(spki_b64, token):
    key = serialization.load_der_public_key(base64.b64decode(spki_b64))
    h, p, s = token.strip().split(".")
    header = json.loads(unb64url(h))
    msg, sig = f"{h}.{p}".encode(), unb64url(s)
    try:
        if header["alg"] == "ES256" and isinstance(key, ec.EllipticCurvePublicKey):
            if len(sig) != 64:
                raise InvalidSignature()
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            key.verify(der, msg, ec.ECDSA(hashes.SHA256()))
        elif header["alg"] == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise InvalidSignature()
    except InvalidSignature:
        print("bad signature")
        return 1
    if header.get("kid") != b64url(hashlib.sha256(base64.b64decode(spki_b64)).digest()):
        print("bad kid")
        return 1
    print("ok " + unb64url(p).decode())
    return 0


def jwk(spki_b64, text):
    """The JSON Web Key `text` (RFC 7517/7518, as a JWKS document lists it) is the key whose
    DER SubjectPublicKeyInfo is spki_b64, with kube-apiserver's kid, use and alg."""
    k = json.loads(text)
    num = lambda name: int.from_bytes(unb64url(k[name]), "big")
    if k.get("kty") == "EC" and k.get("crv") == "P-256" and k.get("alg") == "ES256":
        key = ec.EllipticCurvePublicNumbers(num("x"), num("y"), ec.SECP256R1()).public_key()
    elif k.get("kty") == "RSA" and k.get("alg") == "RS256":
        # No leading zero bytes (RFC 7518 section 6.3.1).
        if unb64url(k["n"])[0] == 0 or unb64url(k["e"])[0] == 0:
            print("leading zero")
            return 1
        key = rsa.RSAPublicNumbers(num("e"), num("n")).public_key()
    else:
        print("unexpected key type " + text)
        return 1
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if der != base64.b64decode(spki_b64):
        print("another key")
        return 1
    if k.get("use") != "sig" or k.get("kid") != b64url(hashlib.sha256(der).digest()):
        print("bad use or kid")
        return 1
    print("ok")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--out", default=DEFAULT_OUT)
    g.add_argument("--check", action="store_true")
    v = sub.add_parser("verify")
    v.add_argument("spki")
    j = sub.add_parser("jwk")
    j.add_argument("spki")
    args = ap.parse_args()
    if args.cmd == "verify":
        return verify(args.spki, sys.stdin.read())
    if args.cmd == "jwk":
        return jwk(args.spki, sys.stdin.read())
    text = json.dumps(generate(), indent=1) + "\n"
    if args.check:
        with open(args.out) as f:
            if f.read() != text:
                print(f"{args.out} differs from freshly generated vectors", file=sys.stderr)
                return 1
        print(f"{args.out} is up to date")
        return 0
    with open(args.out, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
