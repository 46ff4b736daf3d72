//! The framing of every record the embedded engines append (sled's write-ahead log and redo
//! file, the log-structured engine's segments):
//! `le32(len) ‖ le32(crc32c(le32(len) ‖ payload)) ‖ payload`.

/// Bytes of a frame before its payload.
pub(crate) const FRAME_LEN: usize = 8;

/// Fills in the frame of `buf`: [`FRAME_LEN`] placeholder bytes, then a payload of `len` bytes
/// (the caller has checked that the payload's length fits in four bytes).
pub(crate) fn seal(buf: &mut [u8], len: u32) {
    let len = len.to_le_bytes();
    buf[..4].copy_from_slice(&len);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &buf[FRAME_LEN..]);
    buf[4..FRAME_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Whether `payload` is what the frame `head` ([`FRAME_LEN`] bytes) checksums.
pub(crate) fn checks_out(head: &[u8], payload: &[u8]) -> bool {
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    crc32c::crc32c_append(crc32c::crc32c(&head[..4]), payload) == crc
}

/// Appends `be32(len) ‖ bytes`; `bytes` is under 4 GiB (the writers cap batches far below).
pub(crate) fn put_len_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_frame_checks_out_and_a_changed_byte_does_not() {
        let mut buf = vec![0u8; FRAME_LEN];
        put_len_bytes(&mut buf, b"payload");
        let len = u32::try_from(buf.len() - FRAME_LEN).expect("small");
        seal(&mut buf, len);
        assert_eq!(&buf[..4], &11u32.to_le_bytes());
        assert_eq!(&buf[FRAME_LEN..FRAME_LEN + 4], &7u32.to_be_bytes());
        let (head, payload) = buf.split_at(FRAME_LEN);
        assert!(checks_out(head, payload));
        let mut changed = payload.to_vec();
        changed[5] ^= 1;
        assert!(!checks_out(head, &changed));
    }
}
