"""An independent reader of keyward's log-structured store directory, written from the format
described in src/backend/logstore/format.rs (not from its code), so that keyward's own scanner
is not the only judge of what it writes.

    python3 logstore_decode.py STORE_DIR

Prints JSON: every key's current value (base64) and mod revision, how many segments, records
and changes were read, and how many segments hold old bytes after the zero length that ends
their records (cleaned segments used again). Exits non-zero, naming the file and offset, on
anything that does not check out.

Format 2: a segment `<seq, 20 digits>.seg` starts with a 24-byte header
`"KWLOG\\0\\0\\x02" be64(seq) le32(crc32c(first 16 bytes)) 4 zero bytes`; records follow, each
`le32(len) le32(crc) le32(seq) payload` with crc the CRC32C, continued from the value "KWL2"
read as a big-endian u32, of `le32(len) le32(seq) payload`; a zero length ends them. Format 1
(`"KWLOG\\0\\0\\x01"`) frames records as `le32(len) le32(crc32c(le32(len) payload)) payload`
and ends them with zeros.
"""

import base64
import json
import os
import struct
import sys

MAGIC_V1 = b"KWLOG\x00\x00\x01"
MAGIC_V2 = b"KWLOG\x00\x00\x02"
SEED_V2 = struct.unpack(">I", b"KWL2")[0]


def _table():
    poly = 0x82F63B78  # Castagnoli, reflected
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        out.append(c)
    return out


TABLE = _table()


def crc32c(data, crc=0):
    """CRC32C of `data`, continuing from the CRC value `crc` (0 starts a new one)."""
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class Bad(Exception):
    pass


def take(p, at, n):
    if at + n > len(p):
        raise Bad(f"payload ends at {len(p)}, wanted {n} bytes at {at}")
    return p[at : at + n], at + n


def u8(p, at):
    b, at = take(p, at, 1)
    return b[0], at


def be32(p, at):
    b, at = take(p, at, 4)
    return struct.unpack(">I", b)[0], at


def be64(p, at):
    b, at = take(p, at, 8)
    return struct.unpack(">q", b)[0], at


def lenbytes(p, at):
    n, at = be32(p, at)
    return take(p, at, n)


def decode(payload):
    """A record's payload as (kind, versions, gone): versions are (key, revision, value or None
    for a delete); gone, from the last record of a relocation, (key, revision below which every
    version of the key is gone for good)."""
    kind, at = u8(payload, 0)
    versions = []
    gone = []
    if kind == 1:  # a batch
        first, at = be64(payload, at)
        count, at = be32(payload, at)
        for i in range(count):
            op, at = u8(payload, at)
            key, at = lenbytes(payload, at)
            if op == 1:
                _create, at = be64(payload, at)
                _version, at = be64(payload, at)
                value, at = lenbytes(payload, at)
                versions.append((key, first + i, value))
            elif op == 2:
                versions.append((key, first + i, None))
            else:
                raise Bad(f"change of kind {op}")
    elif kind == 2:  # a compaction
        _rev, at = be64(payload, at)
    elif kind == 3:  # a relocation
        _victim, at = be32(payload, at)
        complete, at = u8(payload, at)
        if complete not in (0, 1):
            raise Bad(f"complete flag {complete}")
        _through, at = be64(payload, at)
        _compacted, at = be64(payload, at)
        count, at = be32(payload, at)
        for _ in range(count):
            tag, at = u8(payload, at)
            key, at = lenbytes(payload, at)
            if tag == 1:
                _floor, at = be64(payload, at)
                rev, at = be64(payload, at)
                _create, at = be64(payload, at)
                version, at = be64(payload, at)
                value, at = lenbytes(payload, at)
                versions.append((key, rev, value if version != 0 else None))
            elif tag == 2:
                below, at = be64(payload, at)
                if complete:
                    gone.append((key, below))
            else:
                raise Bad(f"relocation entry of kind {tag}")
    else:
        raise Bad(f"record of kind {kind}")
    if at != len(payload):
        raise Bad(f"{len(payload) - at} bytes left over in a record")
    return kind, versions, gone


def read_segment(seq, data):
    """(format, records, end): every record's (kind, versions), and where the data ends."""
    if len(data) < 24:
        raise Bad("shorter than a header")
    head = data[:24]
    magic, hseq, hcrc = head[:8], struct.unpack(">Q", head[8:16])[0], struct.unpack("<I", head[16:20])[0]
    if magic not in (MAGIC_V1, MAGIC_V2) or hseq != seq or hcrc != crc32c(head[:16]) or head[20:] != b"\0" * 4:
        raise Bad("header does not check out")
    v2 = magic == MAGIC_V2
    records = []
    at = 24
    while True:
        start = at
        if v2:
            if at + 4 > len(data):
                break
            (n,) = struct.unpack("<I", data[at : at + 4])
            if n == 0:
                break
            if at + 12 + n > len(data):
                raise Bad(f"record at offset {at} runs past the file")
            crc, rseq = struct.unpack("<II", data[at + 4 : at + 12])
            if rseq != seq:
                raise Bad(f"record at offset {at} names segment {rseq}")
            payload = data[at + 12 : at + 12 + n]
            want = crc32c(payload, crc32c(data[at + 8 : at + 12], crc32c(data[at : at + 4], SEED_V2)))
            if crc != want:
                raise Bad(f"record at offset {at}: checksum")
            at += 12 + n
        else:
            if at + 8 > len(data) or data[at : at + 8] == b"\0" * 8:
                break
            n, crc = struct.unpack("<II", data[at : at + 8])
            payload = data[at + 8 : at + 8 + n]
            if len(payload) != n or crc != crc32c(payload, crc32c(data[at : at + 4])):
                raise Bad(f"record at offset {at}: checksum")
            at += 8 + n
        try:
            records.append(decode(payload))
        except Bad as e:
            raise Bad(f"record at offset {start}: {e}")
    return ("v2" if v2 else "v1"), records, at


def main():
    store = sys.argv[1]
    names = sorted(n for n in os.listdir(store) if n.endswith(".seg"))
    versions = {}  # key -> {revision: value or None}
    gone = []
    stats = {"segments": 0, "records": 0, "versions": 0, "used_again": 0, "formats": {}}
    for name in names:
        seq = int(name[:-4])
        data = open(os.path.join(store, name), "rb").read()
        try:
            fmt, records, end = read_segment(seq, data)
        except Bad as e:
            sys.exit(f"{name}: {e}")
        stats["segments"] += 1
        stats["formats"][fmt] = stats["formats"].get(fmt, 0) + 1
        stats["records"] += len(records)
        if any(data[end + 4 :]):
            stats["used_again"] += 1
        for _kind, changes, record_gone in records:
            gone.extend(record_gone)
            for key, rev, value in changes:
                stats["versions"] += 1
                of_key = versions.setdefault(key, {})
                # A relocated copy repeats a version: it must be the same.
                if rev in of_key and of_key[rev] != value:
                    sys.exit(f"{name}: two different versions of {key!r} at revision {rev}")
                of_key[rev] = value
    # Relocated copies of versions that a later relocation said are gone stay in older records.
    for key, below in gone:
        for rev in [r for r in versions.get(key, {}) if r < below]:
            del versions[key][rev]
    keys = {}
    for key, of_key in versions.items():
        if of_key:
            rev = max(of_key)
            if of_key[rev] is not None:
                keys[base64.b64encode(key).decode()] = {
                    "mod_revision": rev,
                    "value": base64.b64encode(of_key[rev]).decode(),
                }
    print(json.dumps({"keys": keys, **stats}))


if __name__ == "__main__":
    main()
