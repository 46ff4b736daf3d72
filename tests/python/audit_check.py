#!/usr/bin/env python3
"""Independent check of keyward's audit log format (docs/design.md, "Audit log format").

Recomputes the SHA-256 chain of every line with hashlib and verifies every checkpoint's Ed25519
signature with the `cryptography` package, checking that each note names the line, sequence
number and head it stands at. Knows nothing of keyward's code.

Usage: audit_check.py PUBLIC_KEY.pem FILE...   (files in chain order, oldest first)
Prints {"lines": N, "events": E, "checkpoints": C, "last": KIND}; on the first problem prints
`FAIL file:line: why` and exits 1.
"""
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization


def fail(path, n, why):
    print(f"FAIL {path}:{n}: {why}")
    sys.exit(1)


def main():
    key = serialization.load_pem_public_key(open(sys.argv[1], "rb").read())
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = hashlib.sha256(raw).hexdigest()[:16]
    prev = "sha256:" + "0" * 64
    seq = lines = events = checkpoints = 0
    last = None
    for path in sys.argv[2:]:
        data = open(path, "rb").read()
        if not data.endswith(b"\n"):
            fail(path, 0, "the file does not end with a newline")
        for n, line in enumerate(data[:-1].split(b"\n"), 1):
            ev = json.loads(line)
            if ev.get("kind") != "Event" or ev.get("apiVersion") != "audit.k8s.io/v1":
                fail(path, n, "not an audit.k8s.io/v1 Event")
            a = ev.get("annotations", {})
            if a.get("keyward.io/chain") != prev:
                fail(path, n, "chain mismatch")
            seq += 1
            if a.get("keyward.io/seq") != str(seq):
                fail(path, n, f"sequence {a.get('keyward.io/seq')}, expected {seq}")
            note = a.get("keyward.io/checkpoint")
            if note is None:
                events += 1
                last = "event"
            else:
                alg, kid, sig = a["keyward.io/signature"].split(":")
                if alg != "ed25519" or kid != key_id:
                    fail(path, n, f"signature {alg}:{kid}, expected ed25519:{key_id}")
                try:
                    key.verify(base64.b64decode(sig), note.encode())
                except InvalidSignature:
                    fail(path, n, "bad signature")
                body = note.split("\n")
                if body[0] != "keyward.io/audit/checkpoint/v1" or body[-1] != "":
                    fail(path, n, "bad note")
                fields = dict(l.split(" ", 1) for l in body[1:-1])
                want = {"line": str(n), "seq": str(seq), "head": prev}
                for k, v in want.items():
                    if fields.get(k) != v:
                        fail(path, n, f"note {k} {fields.get(k)}, expected {v}")
                if ev["verb"] != "checkpoint" or ev["stageTimestamp"] != fields["time"]:
                    fail(path, n, "checkpoint event fields")
                checkpoints += 1
                last = fields["kind"]
            prev = "sha256:" + hashlib.sha256(line).hexdigest()
            lines += 1
    print(json.dumps({"lines": lines, "events": events, "checkpoints": checkpoints, "last": last}))


if __name__ == "__main__":
    main()
