"""Independent Python implementations of kube-apiserver's encryption-at-rest providers.

Shared by encryption_vectors.py (known-answer vectors) and encryption_check.py (live cross-check
against keyward). Written from the storage formats in the shared design facts (§3 KMS v2 storage
format, §4.3 prefixes and ciphertext layouts, §3.6/§6.1 AAD = full etcd key), using only the
`cryptography` package (AES-CBC, AES-GCM, HKDF-Expand), PyNaCl (XSalsa20-Poly1305 secretbox) and
protobuf/gRPC stubs generated at run time from the repository's proto/ files. It shares no code
with keyward.

Every writer takes its randomness as explicit arguments, so the caller decides whether it is fixed
(vectors) or fresh (live check). Every reader raises an exception on any mismatch: DecryptError for
format problems, cryptography.exceptions.InvalidTag for a failed AES-GCM open (wrong key or AAD),
nacl.exceptions.CryptoError for a failed secretbox open.

Stored layouts (after the prefix):
  identity   plaintext (no prefix)
  aescbc     k8s:enc:aescbc:v1:<key>:     IV(16) | AES-CBC(PKCS#7(plaintext))    no AAD
  aesgcm     k8s:enc:aesgcm:v1:<key>:     nonce(12) | ct | tag(16)               AAD = etcd key
  secretbox  k8s:enc:secretbox:v1:<key>:  nonce(24) | tag(16) | XSalsa20 ct      no AAD
  kms v1     k8s:enc:kms:v1:<name>:       u16be len(wrapped DEK) | wrapped DEK |
                                          nonce(12) | ct | tag(16)
                                          (AES-GCM with the 32-byte DEK, AAD = etcd key)
  kms v2     k8s:enc:kms:v2:<name>:       protobuf EncryptedObject (see kms_v2_encrypt)
"""

import importlib
import os
import struct
import sys
import tempfile
import types
import uuid

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from nacl.secret import SecretBox

PROTO_ROOT = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
)
# Both v2 files declare `package v2` (as upstream does); their message names do not collide.
PROTO_FILES = [
    "kms/v2/api.proto",
    "kms/v1beta1/api.proto",
    "k8s/apiserver/kmsv2/api.proto",
]

PREFIX_AESCBC = b"k8s:enc:aescbc:v1:"
PREFIX_AESGCM = b"k8s:enc:aesgcm:v1:"
PREFIX_SECRETBOX = b"k8s:enc:secretbox:v1:"
PREFIX_KMS_V1 = b"k8s:enc:kms:v1:"
PREFIX_KMS_V2 = b"k8s:enc:kms:v2:"

AES_BLOCK = 16
AES_KEY_SIZES = (16, 24, 32)
GCM_NONCE = 12
GCM_TAG = 16
SECRETBOX_KEY = 32
SECRETBOX_NONCE = 24
SECRETBOX_TAG = 16
KMS_DEK_SIZE = 32  # kms v1 DEK and kms v2 seed
KMS_V2_INFO = 32
# EncryptedDEKSourceType values (proto/k8s/apiserver/kmsv2/api.proto).
AES_GCM_KEY = 0
HKDF_SHA256_XNONCE_AES_GCM_SEED = 1
# kube-apiserver ValidateEncryptedObject limits.
KEY_ID_MAX = 1024
ENCRYPTED_DEK_SOURCE_MAX = 1024
ANNOTATIONS_MAX = 32 * 1024


class DecryptError(Exception):
    """The stored bytes do not have the expected format (prefix, lengths, padding, record)."""


def _need(cond, msg):
    if not cond:
        raise DecryptError(msg)


def _len(name, value, sizes):
    if len(value) not in sizes:
        raise ValueError(f"{name} must be {' or '.join(map(str, sizes))} bytes, got {len(value)}")


def _strip(stored, prefix):
    _need(stored.startswith(prefix), f"stored value does not start with {prefix!r}")
    return stored[len(prefix):]


def keyed_prefix(base, name):
    """`<base><name>:`; for aescbc/aesgcm/secretbox key names and kms provider names."""
    return base + name.encode("utf-8") + b":"


def aad(storage_key):
    return storage_key.encode("utf-8")


# ---------------------------------------------------------------------------------------------
# identity


def identity_encrypt(plaintext):
    return bytes(plaintext)


def identity_decrypt(stored):
    # kube-apiserver's identity reader refuses data that is clearly encrypted (§4.2).
    _need(not stored.startswith(b"k8s:enc:"), "identity refuses data starting with k8s:enc:")
    return bytes(stored)


# ---------------------------------------------------------------------------------------------
# aescbc


def aescbc_encrypt(key_name, key, plaintext, iv):
    _len("aescbc key", key, AES_KEY_SIZES)
    _len("aescbc IV", iv, (AES_BLOCK,))
    padder = padding.PKCS7(AES_BLOCK * 8).padder()
    padded = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return keyed_prefix(PREFIX_AESCBC, key_name) + iv + enc.update(padded) + enc.finalize()


def aescbc_decrypt(key_name, key, stored):
    _len("aescbc key", key, AES_KEY_SIZES)
    body = _strip(stored, keyed_prefix(PREFIX_AESCBC, key_name))
    iv, ct = body[:AES_BLOCK], body[AES_BLOCK:]
    _need(len(iv) == AES_BLOCK, "aescbc: shorter than the IV")
    _need(len(ct) > 0 and len(ct) % AES_BLOCK == 0,
          f"aescbc: ciphertext length {len(ct)} is not a positive multiple of 16")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = dec.update(ct) + dec.finalize()
    unpadder = padding.PKCS7(AES_BLOCK * 8).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError as e:
        raise DecryptError(f"aescbc: invalid PKCS#7 padding ({e})") from e


# ---------------------------------------------------------------------------------------------
# aesgcm


def gcm_seal(key, nonce, plaintext, storage_key):
    """nonce(12) | ct | tag(16)."""
    _len("AES-GCM key", key, AES_KEY_SIZES)
    _len("AES-GCM nonce", nonce, (GCM_NONCE,))
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad(storage_key))


def gcm_open(key, data, storage_key):
    """Opens nonce(12) | ct | tag(16); raises InvalidTag on a wrong key or AAD."""
    _len("AES-GCM key", key, AES_KEY_SIZES)
    _need(len(data) >= GCM_NONCE + GCM_TAG, f"AES-GCM data too short ({len(data)} bytes)")
    return AESGCM(key).decrypt(data[:GCM_NONCE], data[GCM_NONCE:], aad(storage_key))


def aesgcm_encrypt(key_name, key, storage_key, plaintext, nonce):
    return keyed_prefix(PREFIX_AESGCM, key_name) + gcm_seal(key, nonce, plaintext, storage_key)


def aesgcm_decrypt(key_name, key, storage_key, stored):
    return gcm_open(key, _strip(stored, keyed_prefix(PREFIX_AESGCM, key_name)), storage_key)


# ---------------------------------------------------------------------------------------------
# secretbox


def secretbox_encrypt(key_name, key, plaintext, nonce):
    _len("secretbox key", key, (SECRETBOX_KEY,))
    _len("secretbox nonce", nonce, (SECRETBOX_NONCE,))
    # PyNaCl returns nonce(24) | tag(16) | ciphertext, which is exactly the stored layout.
    sealed = bytes(SecretBox(key).encrypt(bytes(plaintext), nonce))
    assert sealed[:SECRETBOX_NONCE] == nonce
    assert len(sealed) == SECRETBOX_NONCE + SECRETBOX_TAG + len(plaintext)
    return keyed_prefix(PREFIX_SECRETBOX, key_name) + sealed


def secretbox_decrypt(key_name, key, stored):
    _len("secretbox key", key, (SECRETBOX_KEY,))
    body = _strip(stored, keyed_prefix(PREFIX_SECRETBOX, key_name))
    _need(len(body) >= SECRETBOX_NONCE + SECRETBOX_TAG,
          f"secretbox: data too short ({len(body)} bytes)")
    return bytes(SecretBox(key).decrypt(body))


# ---------------------------------------------------------------------------------------------
# kms v1


def kms_v1_encrypt(kms_name, dek, wrapped_dek, storage_key, plaintext, nonce):
    """dek: the 32-byte DEK; wrapped_dek: the plugin's v1beta1 Encrypt(dek).cipher."""
    _len("kms v1 DEK", dek, (KMS_DEK_SIZE,))
    if not 0 < len(wrapped_dek) <= 0xFFFF:
        raise ValueError(f"wrapped DEK must be 1..65535 bytes, got {len(wrapped_dek)}")
    return (keyed_prefix(PREFIX_KMS_V1, kms_name) + struct.pack(">H", len(wrapped_dek))
            + wrapped_dek + gcm_seal(dek, nonce, plaintext, storage_key))


def kms_v1_parse(kms_name, stored):
    """Returns (wrapped DEK, nonce | ct | tag)."""
    body = _strip(stored, keyed_prefix(PREFIX_KMS_V1, kms_name))
    _need(len(body) >= 2, "kms v1: no length prefix")
    (n,) = struct.unpack(">H", body[:2])
    _need(n > 0, "kms v1: wrapped DEK length is 0")
    _need(len(body) >= 2 + n, f"kms v1: wrapped DEK length {n} exceeds the data")
    return body[2:2 + n], body[2 + n:]


def kms_v1_decrypt(kms_name, storage_key, stored, unwrap):
    """unwrap(wrapped_dek) -> dek (the plugin's v1beta1 Decrypt). Returns (plaintext, dek)."""
    wrapped, data = kms_v1_parse(kms_name, stored)
    dek = unwrap(wrapped)
    _need(len(dek) == KMS_DEK_SIZE, f"kms v1: unwrapped DEK is {len(dek)} bytes, expected 32")
    return gcm_open(dek, data, storage_key), dek


# ---------------------------------------------------------------------------------------------
# kms v2 (KDF mode HKDF_SHA256_XNONCE_AES_GCM_SEED)


def kms_v2_derive_dek(seed, info):
    """DEK = HKDF-Expand(SHA-256, PRK = seed, info), 32 bytes. No Extract step, no salt."""
    _len("kms v2 seed", seed, (KMS_DEK_SIZE,))
    _len("kms v2 info", info, (KMS_V2_INFO,))
    return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=info).derive(seed)


def kms_v2_encrypt(pb, kms_name, seed, key_id, encrypted_dek_source, annotations, storage_key,
                   plaintext, info, nonce):
    """pb: the namespace returned by compile_protos() (EncryptedObject comes from pb.storage).

    EncryptedObject { encryptedData(1) = info(32) | nonce(12) | ct | tag(16), keyID(2),
    encryptedDEKSource(3) = plugin's Encrypt(seed).ciphertext, annotations(4) = plugin's
    annotations, encryptedDEKSourceType(5) = 1 }, serialised deterministically (map keys sorted).
    """
    dek = kms_v2_derive_dek(seed, info)
    obj = pb.storage.EncryptedObject(
        encryptedData=info + gcm_seal(dek, nonce, plaintext, storage_key),
        keyID=key_id,
        encryptedDEKSource=encrypted_dek_source,
        annotations=dict(annotations),
        encryptedDEKSourceType=HKDF_SHA256_XNONCE_AES_GCM_SEED,
    )
    return keyed_prefix(PREFIX_KMS_V2, kms_name) + obj.SerializeToString(deterministic=True)


def kms_v2_parse(pb, kms_name, stored):
    """Returns the EncryptedObject after kube-apiserver's ValidateEncryptedObject checks
    (lengths only; annotation keys are not checked for FQDN form here)."""
    body = _strip(stored, keyed_prefix(PREFIX_KMS_V2, kms_name))
    obj = pb.storage.EncryptedObject()
    try:
        obj.ParseFromString(body)
    except Exception as e:  # protobuf's DecodeError
        raise DecryptError(f"kms v2: EncryptedObject does not parse ({e})") from e
    _need(len(obj.encryptedData) > 0, "kms v2: encryptedData is empty")
    _need(0 < len(obj.keyID.encode("utf-8")) <= KEY_ID_MAX,
          f"kms v2: keyID must be 1..{KEY_ID_MAX} bytes")
    _need(0 < len(obj.encryptedDEKSource) <= ENCRYPTED_DEK_SOURCE_MAX,
          f"kms v2: encryptedDEKSource must be 1..{ENCRYPTED_DEK_SOURCE_MAX} bytes")
    ann = sum(len(k.encode("utf-8")) + len(v) for k, v in obj.annotations.items())
    _need(ann <= ANNOTATIONS_MAX, f"kms v2: annotations total {ann} bytes > {ANNOTATIONS_MAX}")
    _need(obj.encryptedDEKSourceType in (AES_GCM_KEY, HKDF_SHA256_XNONCE_AES_GCM_SEED),
          f"kms v2: unknown encryptedDEKSourceType {obj.encryptedDEKSourceType}")
    return obj


def kms_v2_open(obj, dek_source, storage_key):
    """Decrypts obj.encryptedData given the plaintext of encryptedDEKSource."""
    if obj.encryptedDEKSourceType == HKDF_SHA256_XNONCE_AES_GCM_SEED:
        data = obj.encryptedData
        _need(len(data) >= KMS_V2_INFO + GCM_NONCE + GCM_TAG,
              f"kms v2: encryptedData too short ({len(data)} bytes)")
        _need(len(dek_source) == KMS_DEK_SIZE, f"kms v2: seed is {len(dek_source)} bytes")
        dek = kms_v2_derive_dek(dek_source, data[:KMS_V2_INFO])
        return gcm_open(dek, data[KMS_V2_INFO:], storage_key)
    # Legacy AES_GCM_KEY mode (1.27-1.28): the source is the DEK itself.
    _need(len(dek_source) == KMS_DEK_SIZE, f"kms v2: legacy DEK is {len(dek_source)} bytes")
    return gcm_open(dek_source, obj.encryptedData, storage_key)


def kms_v2_decrypt(pb, kms_name, storage_key, stored, unwrap):
    """unwrap(obj) -> plaintext of obj.encryptedDEKSource (the plugin's v2 Decrypt).
    Returns (plaintext, obj, seed)."""
    obj = kms_v2_parse(pb, kms_name, stored)
    seed = unwrap(obj)
    return kms_v2_open(obj, seed, storage_key), obj, seed


# ---------------------------------------------------------------------------------------------
# protobuf / gRPC stubs


def compile_protos():
    """Compiles PROTO_FILES with grpc_tools.protoc into a temporary directory and imports them.

    Returns a namespace: v2 / v2_grpc (KMS v2 API), v1 / v1_grpc (KMS v1beta1 API) and storage
    (EncryptedObject). The modules are fully imported before the directory is removed."""
    from grpc_tools import protoc

    mods = {
        "v2": "kms.v2.api_pb2",
        "v2_grpc": "kms.v2.api_pb2_grpc",
        "v1": "kms.v1beta1.api_pb2",
        "v1_grpc": "kms.v1beta1.api_pb2_grpc",
        "storage": "k8s.apiserver.kmsv2.api_pb2",
    }
    for p in PROTO_FILES:
        if not os.path.isfile(os.path.join(PROTO_ROOT, p)):
            raise SystemExit(f"kw_encryption: missing proto file {os.path.join(PROTO_ROOT, p)}")
    with tempfile.TemporaryDirectory(prefix="kw_encryption_") as gen_dir:
        args = [
            "grpc_tools.protoc",
            f"--proto_path={PROTO_ROOT}",
            f"--python_out={gen_dir}",
            f"--grpc_python_out={gen_dir}",
            *PROTO_FILES,
        ]
        rc = protoc.main(args)
        if rc != 0:
            raise SystemExit(f"kw_encryption: protoc failed with exit code {rc}: {' '.join(args)}")
        # Regular packages, so that an unrelated installed "kms" or "k8s" cannot shadow them.
        for pkg in ["kms", "kms/v2", "kms/v1beta1", "k8s", "k8s/apiserver", "k8s/apiserver/kmsv2"]:
            open(os.path.join(gen_dir, pkg, "__init__.py"), "a").close()
        sys.path.insert(0, gen_dir)
        importlib.invalidate_caches()
        try:
            ns = types.SimpleNamespace(
                **{k: importlib.import_module(v) for k, v in mods.items()})
        finally:
            sys.path.remove(gen_dir)
    return ns


class KmsClient:
    """A KMS plugin on a Unix socket, reached the way kube-apiserver does (insecure channel,
    authority "localhost"). Serves both the v2 and the v1beta1 API."""

    def __init__(self, pb, socket_path, timeout=10.0):
        import grpc

        self.pb = pb
        self.channel = grpc.insecure_channel(
            "unix://" + socket_path, options=[("grpc.default_authority", "localhost")])
        self.call = dict(timeout=timeout, wait_for_ready=True)
        self.v2 = pb.v2_grpc.KeyManagementServiceStub(self.channel)
        self.v1 = pb.v1_grpc.KeyManagementServiceStub(self.channel)

    def close(self):
        self.channel.close()

    # v1beta1: apiserver sends version "v1beta1" in every request.
    def v1_wrap(self, dek):
        return self.v1.Encrypt(self.pb.v1.EncryptRequest(version="v1beta1", plain=dek),
                               **self.call).cipher

    def v1_unwrap(self, wrapped):
        return self.v1.Decrypt(self.pb.v1.DecryptRequest(version="v1beta1", cipher=wrapped),
                               **self.call).plain

    # v2
    def v2_wrap(self, seed):
        """Returns (ciphertext, key_id, annotations dict)."""
        r = self.v2.Encrypt(self.pb.v2.EncryptRequest(plaintext=seed, uid=str(uuid.uuid4())),
                            **self.call)
        return r.ciphertext, r.key_id, dict(r.annotations)

    def v2_unwrap(self, obj):
        """obj: a parsed EncryptedObject. Returns the plaintext of its encryptedDEKSource."""
        return self.v2.Decrypt(self.pb.v2.DecryptRequest(
            ciphertext=obj.encryptedDEKSource, uid=str(uuid.uuid4()), key_id=obj.keyID,
            annotations=dict(obj.annotations)), **self.call).plaintext
