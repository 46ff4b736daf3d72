//! Unix socket connections whose HTTP/2 requests carry a `:authority` that is not a URI
//! authority. gRPC C-core (Python's grpcio, C++, Ruby), grpc-java and grpcurl send the socket's
//! path there (`/run/keyward.sock`, or its %-encoding); h2, under tonic, resets such a stream
//! (`PROTOCOL_ERROR`), where grpc-go's server takes any authority. Over a Unix socket the
//! authority names nothing, so [`UnixConn`] reads a connection's first header block: with a
//! valid authority (or none), the connection is handed on untouched from then on; with another,
//! every header block of the connection is decoded (HPACK, with the client's dynamic table) and
//! encoded again without the dynamic table, `:authority` being `localhost`, as grpc-go's clients
//! send it over a Unix socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// The client connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types and flags (RFC 9113, section 6).
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// A header block larger than this is handed on as it is (h2 refuses it).
const MAX_BLOCK: usize = 1 << 20;
/// The size of the frames a rewritten header block is cut into: HTTP/2's smallest allowed
/// `SETTINGS_MAX_FRAME_SIZE`, which every peer accepts.
const MAX_FRAME: usize = 16_384;
/// What replaces an authority that is not one.
const LOCALHOST: &[u8] = b"localhost";

/// How the bytes read so far are handled.
enum Mode {
    /// Before the connection preface.
    Preface,
    /// Before the first header block: frames are read to find it.
    First(Box<hpack::Decoder<'static>>),
    /// Every header block is encoded again.
    Rewrite(Box<hpack::Decoder<'static>>),
    /// Handed on untouched.
    Through,
}

/// An accepted Unix connection for tonic, with the peer's credentials, whose requests reach h2
/// with a valid `:authority` (see the module documentation).
pub struct UnixConn {
    stream: UnixStream,
    mode: Mode,
    /// Read from the socket, not yet transformed.
    input: Vec<u8>,
    /// Payload bytes of the current frame (not a header block) still to hand on as they come.
    passing: usize,
    /// Transformed, not yet read by h2 (from `output_at`).
    output: Vec<u8>,
    output_at: usize,
}

impl std::fmt::Debug for UnixConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnixConn")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl UnixConn {
    /// Wraps an accepted connection.
    pub fn new(stream: UnixStream) -> Self {
        UnixConn {
            stream,
            mode: Mode::Preface,
            input: Vec::new(),
            passing: 0,
            output: Vec::new(),
            output_at: 0,
        }
    }
}

impl Connected for UnixConn {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The transformation of the bytes a client sends, apart from the socket (tested alone).
struct Rewriter<'a> {
    mode: &'a mut Mode,
    input: &'a mut Vec<u8>,
    passing: &'a mut usize,
    output: &'a mut Vec<u8>,
}

impl Rewriter<'_> {
    /// Moves what it can from the input to the output; what is left waits for more bytes.
    fn run(&mut self) -> io::Result<()> {
        let mut at = 0;
        let result = loop {
            let rest = &self.input[at..];
            if rest.is_empty() {
                break Ok(());
            }
            if *self.passing > 0 {
                let n = (*self.passing).min(rest.len());
                self.output.extend_from_slice(&rest[..n]);
                *self.passing -= n;
                at += n;
                continue;
            }
            match self.mode {
                Mode::Through => {
                    self.output.extend_from_slice(rest);
                    at += rest.len();
                }
                Mode::Preface => {
                    let n = rest.len().min(PREFACE.len());
                    if rest[..n] != PREFACE[..n] {
                        // Not HTTP/2 with prior knowledge: h2 answers it.
                        *self.mode = Mode::Through;
                    } else if n == PREFACE.len() {
                        self.output.extend_from_slice(PREFACE);
                        at += n;
                        *self.mode = Mode::First(Box::new(hpack::Decoder::new()));
                    } else {
                        break Ok(());
                    }
                }
                Mode::First(_) | Mode::Rewrite(_) => {
                    match frame(self.mode, self.passing, self.output, rest) {
                        Ok(Some(used)) => at += used,
                        Ok(None) => break Ok(()),
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        self.input.drain(..at);
        result
    }
}

/// Handles the frame at the start of `rest`: the bytes used, or `None` until more come.
fn frame(
    mode: &mut Mode,
    passing: &mut usize,
    output: &mut Vec<u8>,
    rest: &[u8],
) -> io::Result<Option<usize>> {
    let Some(header) = rest.get(..9) else {
        return Ok(None);
    };
    let len = frame_len(header);
    if header[3] != HEADERS {
        output.extend_from_slice(header);
        *passing = len;
        return Ok(Some(9));
    }
    let Some(block) = HeaderBlock::read(rest) else {
        return Ok(None);
    };
    let block = match block {
        Ok(b) => b,
        Err(()) => return give_up(mode),
    };
    let decoder = match mode {
        Mode::First(d) | Mode::Rewrite(d) => d,
        _ => return give_up(mode),
    };
    let fields = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decoder.decode(&block.fragment)
    }));
    let Ok(Ok(fields)) = fields else {
        return give_up(mode);
    };
    if matches!(mode, Mode::First(_)) {
        let valid = fields
            .iter()
            .find(|(name, _)| name == b":authority")
            .is_none_or(|(_, value)| is_authority(value));
        if valid {
            *mode = Mode::Through;
            return Ok(Some(0));
        }
        if let Mode::First(decoder) = std::mem::replace(mode, Mode::Through) {
            *mode = Mode::Rewrite(decoder);
        }
    }
    block.write(&fields, output);
    Ok(Some(block.used))
}

/// A header block this cannot read: before any was rewritten, h2 reads it (and answers what
/// is wrong with it); after, the connection cannot go on.
fn give_up(mode: &mut Mode) -> io::Result<Option<usize>> {
    match mode {
        Mode::Rewrite(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an HTTP/2 header block that cannot be decoded",
        )),
        _ => {
            *mode = Mode::Through;
            Ok(Some(0))
        }
    }
}

/// Whether h2 takes `value` as a `:authority`.
fn is_authority(value: &[u8]) -> bool {
    !value.is_empty() && http::uri::Authority::try_from(value).is_ok()
}

/// A HEADERS frame and its CONTINUATION frames.
struct HeaderBlock {
    stream: [u8; 4],
    end_stream: bool,
    /// The priority fields of the HEADERS frame, if it had them.
    priority: Option<[u8; 5]>,
    /// The header block fragments, joined.
    fragment: Vec<u8>,
    /// The bytes of all the frames.
    used: usize,
}

impl HeaderBlock {
    /// Reads the block at the start of `rest` (a HEADERS frame): `None` until all its frames
    /// are there; `Err` for frames that break the protocol or a block over [`MAX_BLOCK`].
    fn read(rest: &[u8]) -> Option<Result<HeaderBlock, ()>> {
        let mut at = 0;
        let mut block: Option<HeaderBlock> = None;
        loop {
            let header = rest.get(at..at + 9)?;
            let len = frame_len(header);
            let (kind, flags) = (header[3], header[4]);
            let stream = [header[5], header[6], header[7], header[8]];
            let expected = if block.is_none() {
                HEADERS
            } else {
                CONTINUATION
            };
            if kind != expected
                || block.as_ref().is_some_and(|b| b.stream != stream)
                || len > MAX_BLOCK
                || block
                    .as_ref()
                    .is_some_and(|b| b.fragment.len() + len > MAX_BLOCK)
            {
                return Some(Err(()));
            }
            let payload = rest.get(at + 9..at + 9 + len)?;
            at += 9 + len;
            let b = block.get_or_insert_with(|| HeaderBlock {
                stream,
                end_stream: false,
                priority: None,
                fragment: Vec::new(),
                used: 0,
            });
            if kind == HEADERS {
                let Some(fragment) = b.headers_payload(flags, payload) else {
                    return Some(Err(()));
                };
                b.fragment.extend_from_slice(fragment);
            } else {
                b.fragment.extend_from_slice(payload);
            }
            if flags & END_HEADERS != 0 {
                b.used = at;
                return block.map(Ok);
            }
        }
    }

    /// Takes the HEADERS frame's flags and fields; its fragment, or `None` if the padding or
    /// priority fields do not fit.
    fn headers_payload<'p>(&mut self, flags: u8, payload: &'p [u8]) -> Option<&'p [u8]> {
        self.end_stream = flags & END_STREAM != 0;
        let mut body = payload;
        if flags & PADDED != 0 {
            let (&pad, rest) = body.split_first()?;
            body = rest.get(..rest.len().checked_sub(usize::from(pad))?)?;
        }
        if flags & PRIORITY != 0 {
            let (fields, rest) = body.split_at_checked(5)?;
            self.priority = Some(fields.try_into().ok()?);
            body = rest;
        }
        Some(body)
    }

    /// Writes the block again with `fields`: each a literal without indexing (so h2's dynamic
    /// table stays empty), `:authority` as [`LOCALHOST`] where it is not an authority, in
    /// frames of at most [`MAX_FRAME`] bytes, without padding.
    fn write(&self, fields: &[(Vec<u8>, Vec<u8>)], out: &mut Vec<u8>) {
        let mut block = Vec::new();
        for (name, value) in fields {
            let value = if name == b":authority" && !is_authority(value) {
                LOCALHOST
            } else {
                value.as_slice()
            };
            block.push(0x00);
            string(&mut block, name);
            string(&mut block, value);
        }
        let priority = self.priority.as_ref().map_or(&[][..], |p| &p[..]);
        let mut rest = block.as_slice();
        let mut first = true;
        loop {
            let room = MAX_FRAME - if first { priority.len() } else { 0 };
            let (chunk, tail) = rest.split_at(room.min(rest.len()));
            rest = tail;
            let mut flags = if rest.is_empty() { END_HEADERS } else { 0 };
            let (kind, prefix) = if first {
                if self.end_stream {
                    flags |= END_STREAM;
                }
                if self.priority.is_some() {
                    flags |= PRIORITY;
                }
                (HEADERS, priority)
            } else {
                (CONTINUATION, &[][..])
            };
            let len = ((prefix.len() + chunk.len()) as u32).to_be_bytes();
            out.extend_from_slice(&len[1..]);
            out.extend_from_slice(&[kind, flags]);
            out.extend_from_slice(&self.stream);
            out.extend_from_slice(prefix);
            out.extend_from_slice(chunk);
            first = false;
            if rest.is_empty() {
                return;
            }
        }
    }
}

/// The payload length in a frame header.
fn frame_len(header: &[u8]) -> usize {
    usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2])
}

/// An HPACK string literal without Huffman coding (RFC 7541, section 5.2).
fn string(out: &mut Vec<u8>, s: &[u8]) {
    // The length as an integer with a 7-bit prefix (section 5.1).
    let mut n = s.len();
    if n < 0x7f {
        out.push(n as u8);
    } else {
        out.push(0x7f);
        n -= 0x7f;
        while n >= 0x80 {
            out.push((n % 0x80) as u8 | 0x80);
            n /= 0x80;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

impl AsyncRead for UnixConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.output_at < this.output.len() {
                let ready = &this.output[this.output_at..];
                let n = ready.len().min(buf.remaining());
                buf.put_slice(&ready[..n]);
                this.output_at += n;
                if this.output_at == this.output.len() {
                    this.output.clear();
                    this.output_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Through) && this.input.is_empty() && this.passing == 0 {
                return Pin::new(&mut this.stream).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.stream).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // The end: what is left goes on as it is, for h2 to judge.
                    this.output.append(&mut this.input);
                    this.mode = Mode::Through;
                    this.passing = 0;
                    if this.output.is_empty() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Ok(())) => {
                    this.input.extend_from_slice(read.filled());
                    Rewriter {
                        mode: &mut this.mode,
                        input: &mut this.input,
                        passing: &mut this.passing,
                        output: &mut this.output,
                    }
                    .run()?;
                }
            }
        }
    }
}

crate::net::write_to_stream!(UnixConn);

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// What the rewriter makes of `input`, fed `step` bytes at a time.
    fn rewrite(input: &[u8], step: usize) -> Vec<u8> {
        let (mut mode, mut pending, mut passing, mut output) =
            (Mode::Preface, Vec::new(), 0, Vec::new());
        for chunk in input.chunks(step) {
            pending.extend_from_slice(chunk);
            Rewriter {
                mode: &mut mode,
                input: &mut pending,
                passing: &mut passing,
                output: &mut output,
            }
            .run()
            .unwrap();
        }
        assert!(pending.is_empty(), "{} bytes left", pending.len());
        output
    }

    /// The frames of an HTTP/2 byte stream after the preface: (type, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..24], PREFACE);
        let mut rest = &bytes[24..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = frame_len(rest);
            let stream = u32::from_be_bytes(rest[5..9].try_into().unwrap());
            out.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        out
    }

    fn request(authority: &[u8], path: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
    }

    const GET: &[u8] = b"/keyward.v1.Secrets/Get";
    const LIST: &[u8] = b"/keyward.v1.Secrets/List";

    /// A client's connection: the preface, SETTINGS, then two requests encoded with one HPACK
    /// encoder (the second refers to the first's dynamic table entries), the first padded and
    /// with priority fields, the second cut into a HEADERS and a CONTINUATION frame, each with
    /// a DATA frame.
    fn connection(authority: &[u8]) -> Vec<u8> {
        let mut enc = hpack::Encoder::new();
        let mut encode = |path: &[u8]| {
            let fields = request(authority, path);
            enc.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
        };
        let mut out = PREFACE.to_vec();
        out.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        let mut padded = vec![3, 0x80, 0, 0, 0, 15];
        padded.extend_from_slice(&encode(GET));
        padded.extend_from_slice(&[0, 0, 0]);
        out.extend(frame(HEADERS, END_HEADERS | PADDED | PRIORITY, 1, &padded));
        out.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\x02ab"));
        let second = encode(LIST);
        let (a, b) = second.split_at(second.len() / 2);
        out.extend(frame(HEADERS, 0, 3, a));
        out.extend(frame(CONTINUATION, END_HEADERS, 3, b));
        out.extend(frame(0x0, END_STREAM, 3, &[7u8; 16_000]));
        out
    }

    #[test]
    fn a_path_for_authority_becomes_localhost_and_nothing_else_changes() {
        for authority in [&b"/run/keyward.sock"[..], b"%2Frun%2Fkeyward.sock", b""] {
            let input = connection(authority);
            let want = frames(&input);
            for step in [1, 7, 9, 100, input.len()] {
                let got = frames(&rewrite(&input, step));
                // A fresh decoder reads the rewritten blocks: nothing refers to a dynamic table.
                let mut dec = hpack::Decoder::new();
                let headers: Vec<_> = got.iter().filter(|f| f.0 == HEADERS).collect();
                assert_eq!(headers.len(), 2);
                for (h, path) in headers.iter().zip([GET, LIST]) {
                    let priority_len = if h.1 & PRIORITY != 0 { 5 } else { 0 };
                    let fields = dec.decode(&h.3[priority_len..]).unwrap();
                    assert_eq!(fields, request(LOCALHOST, path));
                    assert_eq!(h.1 & (END_HEADERS | PADDED), END_HEADERS);
                }
                assert_eq!(&headers[0].3[..5], &[0x80, 0, 0, 0, 15], "priority kept");
                assert!(got.iter().all(|f| f.0 != CONTINUATION));
                // Every other frame is as it was sent.
                let others = |fs: &[(u8, u8, u32, Vec<u8>)]| -> Vec<_> {
                    fs.iter()
                        .filter(|f| f.0 != HEADERS && f.0 != CONTINUATION)
                        .cloned()
                        .collect()
                };
                assert_eq!(others(&got), others(&want));
            }
        }
    }

    #[test]
    fn a_valid_authority_is_handed_on_untouched() {
        for authority in [&b"localhost"[..], b"tonic", b"keyward:8443"] {
            let input = connection(authority);
            for step in [1, 9, input.len()] {
                assert_eq!(rewrite(&input, step), input);
            }
        }
    }

    #[test]
    fn what_is_not_http2_or_breaks_framing_is_handed_on_for_h2_to_judge() {
        let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(rewrite(&http1, 3), http1);
        // A CONTINUATION on another stream, before any block was rewritten.
        let mut bad = PREFACE.to_vec();
        bad.extend(frame(HEADERS, 0, 1, &[0x82]));
        bad.extend(frame(CONTINUATION, END_HEADERS, 3, &[0x84]));
        assert_eq!(rewrite(&bad, 5), bad);
        // A block HPACK cannot decode (an index past both tables).
        let mut undecodable = PREFACE.to_vec();
        undecodable.extend(frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f]));
        assert_eq!(rewrite(&undecodable, 4), undecodable);
    }

    #[test]
    fn a_block_larger_than_a_frame_is_cut_into_continuations() {
        let big = vec![b'v'; 40_000];
        let fields = vec![(b"x-big".to_vec(), big.clone())];
        let block = HeaderBlock {
            stream: [0, 0, 0, 5],
            end_stream: true,
            priority: None,
            fragment: Vec::new(),
            used: 0,
        };
        let mut out = PREFACE.to_vec();
        block.write(&fields, &mut out);
        let fs = frames(&out);
        let kinds: Vec<(u8, u8)> = fs.iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(
            kinds,
            [
                (HEADERS, END_STREAM),
                (CONTINUATION, 0),
                (CONTINUATION, END_HEADERS)
            ]
        );
        assert!(fs.iter().all(|f| f.3.len() <= MAX_FRAME && f.2 == 5));
        let joined: Vec<u8> = fs.iter().flat_map(|f| f.3.clone()).collect();
        assert_eq!(hpack::Decoder::new().decode(&joined).unwrap(), fields);
    }

    #[test]
    fn long_strings_use_the_integer_continuation() {
        let mut out = Vec::new();
        string(&mut out, &[b'a'; 200]);
        // 200 = 127 + 73.
        assert_eq!(&out[..2], &[0x7f, 73]);
        assert_eq!(out.len(), 202);
        let mut out = Vec::new();
        string(&mut out, &[b'a'; 127 + 128 * 3 + 5]);
        assert_eq!(&out[..3], &[0x7f, 0x85, 3]);
    }
}
