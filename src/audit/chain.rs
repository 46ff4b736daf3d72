//! The tamper-evidence format shared by the writer and the verifier.
//!
//! Every line of a log file is an `audit.k8s.io/v1` Event whose `annotations` carry:
//! - `keyward.io/chain`: `sha256:<hex>` of the previous line's bytes (without its newline); the
//!   first line of the first file links to 64 zeros, the first line of a later file to the last
//!   line of the file before it.
//! - `keyward.io/seq`: the line's sequence number in the whole log, from 1, across files.
//!
//! A checkpoint is a line of its own: an Event with verb `checkpoint`, requestURI
//! [`CHECKPOINT_URI`] and user [`CHECKPOINT_USER`], so kube tooling reads it as an event and can
//! skip it by verb. Its `keyward.io/checkpoint` annotation is a note (one `key value` per line)
//! naming the log, the file index, the line, the sequence number, the head (the chain value,
//! i.e. the hash of the line before), the time and the kind; `keyward.io/signature` is
//! `ed25519:<key id>:<base64 signature of the note>`. The rest of the line is a function of the
//! note, so a verifier re-renders it and any edit shows.
//!
//! A `lost` line (verb [`LOST_VERB`], requestURI [`LOST_URI`]) records events the writer could
//! not write although their requests went on (a failed `ResponseComplete` of a request that had
//! already acted, batch mode, `--audit-fail-open`): `keyward.io/lost-events` says how many, and
//! `keyward.io/lost-reason` why. It ends the next write once the log can be written again,
//! chained like any event.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::AuditError;
use crate::crypto::{sha256, Ed25519PublicKey, Ed25519SigningKey, ED25519_SIGNATURE_LEN};

/// Annotation: `sha256:<hex>` of the previous line.
pub const CHAIN_ANNOTATION: &str = "keyward.io/chain";
/// Annotation: the line's sequence number in the log (decimal, from 1).
pub const SEQ_ANNOTATION: &str = "keyward.io/seq";
/// Annotation of checkpoint lines: the signed note.
pub const CHECKPOINT_ANNOTATION: &str = "keyward.io/checkpoint";
/// Annotation of checkpoint lines: `ed25519:<key id>:<base64 signature>`.
pub const SIGNATURE_ANNOTATION: &str = "keyward.io/signature";
/// Annotation: the uid of a Unix-socket caller (which has no source IP).
pub const PEER_UID_ANNOTATION: &str = "keyward.io/peer-uid";
/// `requestURI` of checkpoint lines.
pub const CHECKPOINT_URI: &str = "/keyward.io/audit/checkpoint";
/// `verb` of checkpoint lines: filter on it to skip them.
pub const CHECKPOINT_VERB: &str = "checkpoint";
/// `user.username` of checkpoint lines.
pub const CHECKPOINT_USER: &str = "system:keyward:audit";

/// `requestURI` of `lost` lines.
pub const LOST_URI: &str = "/keyward.io/audit/lost";
/// `verb` of `lost` lines.
pub const LOST_VERB: &str = "lost";
/// Annotation of `lost` lines: how many events were not written (decimal).
pub const LOST_EVENTS_ANNOTATION: &str = "keyward.io/lost-events";
/// Annotation of `lost` lines: why they were not written.
pub const LOST_REASON_ANNOTATION: &str = "keyward.io/lost-reason";

/// First line of every checkpoint note.
const NOTE_HEADER: &str = "keyward.io/audit/checkpoint/v1";

/// The chain value of the very first line of a log.
pub(super) const GENESIS: [u8; 32] = [0; 32];

/// Signs checkpoints. The private key stays with the implementation (sealed at rest by the
/// caller; [`Ed25519SigningKey`] zeroizes it in memory).
pub trait CheckpointSigner: Send + Sync + 'static {
    /// The key that verifies this signer's signatures.
    fn public_key(&self) -> Ed25519PublicKey;
    /// The Ed25519 signature of `message`.
    fn sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], AuditError>;
}

impl CheckpointSigner for Ed25519SigningKey {
    fn public_key(&self) -> Ed25519PublicKey {
        Ed25519SigningKey::public_key(self).clone()
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], AuditError> {
        Ok(Ed25519SigningKey::sign(self, message))
    }
}

/// Reads a public key file: a PEM `PUBLIC KEY` (as `openssl pkey -pubout` writes it), or the
/// key's 32 bytes as base64, hex or raw bytes.
pub fn read_public_key(path: &Path) -> Result<Ed25519PublicKey, AuditError> {
    let bytes = std::fs::read(path).map_err(|source| AuditError::Io {
        path: path.to_owned(),
        source,
    })?;
    let from_text = || {
        let text = std::str::from_utf8(&bytes).ok()?;
        Ed25519PublicKey::from_pem(text).or_else(|| {
            let t = text.trim();
            let b64 = || B64.decode(t).ok();
            b64()
                .and_then(|b| Ed25519PublicKey::from_bytes(&b))
                .or_else(|| Ed25519PublicKey::from_bytes(&hex::decode(t).ok()?))
        })
    };
    from_text()
        .or_else(|| Ed25519PublicKey::from_bytes(&bytes))
        .ok_or_else(|| AuditError::PublicKey {
            path: path.to_owned(),
        })
}

/// SHA-256 of a line's bytes (without its newline).
pub(super) fn line_hash(line: &[u8]) -> [u8; 32] {
    sha256(line)
}

/// `sha256:<hex>`.
pub(super) fn hash_text(h: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(h))
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("sha256:")?;
    if hex.len() != 64 || hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(hex).ok()?.try_into().ok()
}

/// Why a checkpoint was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// Line 1 of every file: a new log, or the file after a rotation.
    Open,
    /// Every N events or T seconds.
    Periodic,
    /// The last line of a file that was rotated away.
    Rotate,
    /// The last line written before a clean shutdown.
    Shutdown,
    /// The first line written after reopening a file that already had lines.
    Resume,
}

impl CheckpointKind {
    const ALL: [CheckpointKind; 5] = [
        CheckpointKind::Open,
        CheckpointKind::Periodic,
        CheckpointKind::Rotate,
        CheckpointKind::Shutdown,
        CheckpointKind::Resume,
    ];

    /// The name in notes.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointKind::Open => "open",
            CheckpointKind::Periodic => "periodic",
            CheckpointKind::Rotate => "rotate",
            CheckpointKind::Shutdown => "shutdown",
            CheckpointKind::Resume => "resume",
        }
    }
}

impl fmt::Display for CheckpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a checkpoint signs: where it stands in the log and the hash of everything before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Checkpoint {
    /// The log's id (a UUID chosen when the log was created; the same in every file).
    pub log: String,
    /// The file's index in the log (0 for the first file; +1 per rotation).
    pub file: u64,
    /// The checkpoint's own line number in its file (from 1).
    pub line: u64,
    /// The checkpoint's own sequence number in the log (from 1).
    pub seq: u64,
    /// The hash of the line before the checkpoint ([`GENESIS`] before the first line).
    pub head: [u8; 32],
    /// When (MicroTime format).
    pub time: String,
    /// Why.
    pub kind: CheckpointKind,
    /// For an `open` checkpoint after a rotation: the name the previous file was given.
    pub prev_file: Option<String>,
    /// For a `resume` checkpoint: the first and last sequence numbers of the lines after the
    /// last checkpoint before it that the writer could not vouch for when it restarted (no
    /// authentic sync journal held them): they may have been changed while it was stopped.
    pub unattested: Option<(u64, u64)>,
}

impl Checkpoint {
    /// The note: the text that is signed.
    pub fn note(&self) -> String {
        let mut n = format!(
            "{NOTE_HEADER}\nlog {}\nfile {}\nline {}\nseq {}\nhead {}\ntime {}\nkind {}\n",
            self.log,
            self.file,
            self.line,
            self.seq,
            hash_text(&self.head),
            self.time,
            self.kind
        );
        if let Some(p) = &self.prev_file {
            n.push_str(&format!("prev-file {p}\n"));
        }
        if let Some((first, last)) = self.unattested {
            n.push_str(&format!("unattested {first}-{last}\n"));
        }
        n
    }

    /// Parses a note; only the exact text [`Checkpoint::note`] writes is accepted.
    pub fn parse_note(text: &str) -> Result<Checkpoint, String> {
        let mut fields = BTreeMap::new();
        let mut lines = text.split_terminator('\n');
        if lines.next() != Some(NOTE_HEADER) {
            return Err(format!("the note does not start with {NOTE_HEADER}"));
        }
        for l in lines {
            let (k, v) = l
                .split_once(' ')
                .ok_or_else(|| format!("note line {l:?} is not `key value`"))?;
            fields.insert(k, v);
        }
        let get = |k: &str| fields.get(k).copied().ok_or(format!("the note has no {k}"));
        let num = |k: &str| -> Result<u64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("the note's {k} is not a number"))
        };
        let kind = get("kind")?;
        let c = Checkpoint {
            log: get("log")?.to_owned(),
            file: num("file")?,
            line: num("line")?,
            seq: num("seq")?,
            head: parse_hash(get("head")?).ok_or("the note's head is not sha256:<hex>")?,
            time: get("time")?.to_owned(),
            kind: CheckpointKind::ALL
                .into_iter()
                .find(|k| k.as_str() == kind)
                .ok_or(format!("unknown checkpoint kind {kind:?}"))?,
            prev_file: fields.get("prev-file").map(|s| s.to_string()),
            unattested: match fields.get("unattested") {
                None => None,
                Some(range) => Some(
                    range
                        .split_once('-')
                        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                        .ok_or("the note's unattested is not FIRST-LAST")?,
                ),
            },
        };
        if c.note() != text {
            return Err("the note is not in canonical form".into());
        }
        Ok(c)
    }

    /// The checkpoint's line, signed by `signer`.
    pub fn signed_line(&self, signer: &dyn CheckpointSigner) -> Result<Vec<u8>, AuditError> {
        let note = self.note();
        let sig = signer.sign(note.as_bytes())?;
        Ok(render_checkpoint_line(
            &note,
            &self.time,
            &self.head,
            self.seq,
            &signature_text(signer, &sig),
        ))
    }

    /// The length of [`Checkpoint::signed_line`]'s line, found without signing: a signature of
    /// the same length stands in for the real one.
    pub fn line_len(&self, signer: &dyn CheckpointSigner) -> usize {
        let signature = signature_text(signer, &[0; ED25519_SIGNATURE_LEN]);
        render_checkpoint_line(&self.note(), &self.time, &self.head, self.seq, &signature).len()
    }
}

/// `ed25519:<key id>:<base64 signature>`, the value of a checkpoint's signature annotation.
fn signature_text(signer: &dyn CheckpointSigner, sig: &[u8; ED25519_SIGNATURE_LEN]) -> String {
    format!(
        "ed25519:{}:{}",
        signer.public_key().key_id(),
        B64.encode(sig)
    )
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckpointEvent<'a> {
    kind: &'static str,
    api_version: &'static str,
    level: &'static str,
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: &'static str,
    #[serde(rename = "requestURI")]
    request_uri: &'static str,
    verb: &'static str,
    user: CheckpointUser,
    request_received_timestamp: &'a str,
    stage_timestamp: &'a str,
    annotations: BTreeMap<&'static str, &'a str>,
}

#[derive(Serialize)]
struct CheckpointUser {
    username: &'static str,
}

/// The whole checkpoint line: a function of the note, its signature and its chain position.
pub(super) fn render_checkpoint_line(
    note: &str,
    time: &str,
    head: &[u8; 32],
    seq: u64,
    signature: &str,
) -> Vec<u8> {
    let digest = sha256(note.as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    let audit_id = uuid::Builder::from_random_bytes(id).into_uuid().to_string();
    let (chain, seq) = (hash_text(head), seq.to_string());
    writer_line(
        audit_id,
        (CHECKPOINT_URI, CHECKPOINT_VERB),
        time,
        BTreeMap::from([
            (CHAIN_ANNOTATION, chain.as_str()),
            (CHECKPOINT_ANNOTATION, note),
            (SEQ_ANNOTATION, seq.as_str()),
            (SIGNATURE_ANNOTATION, signature),
        ]),
    )
}

/// The line that records `events` events not written, for `reason`, at `time`, chained after
/// `head` as line `seq` of the log.
pub(super) fn render_lost_line(
    events: u64,
    reason: &str,
    time: &str,
    head: &[u8; 32],
    seq: u64,
) -> Vec<u8> {
    let (chain, seq, events) = (hash_text(head), seq.to_string(), events.to_string());
    writer_line(
        super::new_audit_id(),
        (LOST_URI, LOST_VERB),
        time,
        BTreeMap::from([
            (CHAIN_ANNOTATION, chain.as_str()),
            (LOST_EVENTS_ANNOTATION, events.as_str()),
            (LOST_REASON_ANNOTATION, reason),
            (SEQ_ANNOTATION, seq.as_str()),
        ]),
    )
}

/// A line of the writer's own (user [`CHECKPOINT_USER`], stage `ResponseComplete`, level
/// `Metadata`) with `(requestURI, verb)` at `time` and `annotations`.
fn writer_line(
    audit_id: String,
    (request_uri, verb): (&'static str, &'static str),
    time: &str,
    annotations: BTreeMap<&'static str, &str>,
) -> Vec<u8> {
    let ev = CheckpointEvent {
        kind: "Event",
        api_version: "audit.k8s.io/v1",
        level: "Metadata",
        audit_id,
        stage: "ResponseComplete",
        request_uri,
        verb,
        user: CheckpointUser {
            username: CHECKPOINT_USER,
        },
        request_received_timestamp: time,
        stage_timestamp: time,
        annotations,
    };
    serde_json::to_vec(&ev).expect("a writer's line always serialises")
}

/// What the chain needs from one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LineInfo {
    /// `keyward.io/seq`.
    pub seq: u64,
    /// `keyward.io/chain`.
    pub chain: [u8; 32],
    /// For a checkpoint line: the note and the signature annotation (possibly empty).
    pub checkpoint: Option<(String, String)>,
    /// For a `lost` line: how many events were not written, and why.
    pub lost: Option<(u64, String)>,
}

#[derive(Deserialize)]
struct LineView {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Reads a line's chain annotations; `Err` says why the line is not one keyward wrote.
pub(super) fn parse_line(line: &[u8]) -> Result<LineInfo, String> {
    let view: LineView =
        serde_json::from_slice(line).map_err(|e| format!("not a JSON audit event ({e})"))?;
    let mut a = view.annotations;
    let chain = a
        .get(CHAIN_ANNOTATION)
        .ok_or(format!("no {CHAIN_ANNOTATION} annotation"))?;
    let chain = parse_hash(chain).ok_or(format!("{CHAIN_ANNOTATION} is not sha256:<hex>"))?;
    let seq = a
        .get(SEQ_ANNOTATION)
        .ok_or(format!("no {SEQ_ANNOTATION} annotation"))?;
    let seq = seq
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && n.to_string() == *seq)
        .ok_or(format!("{SEQ_ANNOTATION} is not a sequence number"))?;
    let checkpoint = a
        .remove(CHECKPOINT_ANNOTATION)
        .map(|note| (note, a.remove(SIGNATURE_ANNOTATION).unwrap_or_default()));
    let lost = match a.remove(LOST_EVENTS_ANNOTATION) {
        Some(n) => Some((
            n.parse::<u64>()
                .map_err(|_| format!("{LOST_EVENTS_ANNOTATION} is not a number"))?,
            a.remove(LOST_REASON_ANNOTATION).unwrap_or_default(),
        )),
        None => None,
    };
    Ok(LineInfo {
        seq,
        chain,
        checkpoint,
        lost,
    })
}

/// Why a checkpoint's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SignatureError {
    /// No signature, or not `ed25519:<id>:<base64>`.
    Malformed,
    /// Signed by a key that is not among the given ones.
    UnknownKey(String),
    /// The signature does not verify.
    Invalid,
}

/// Checks `signature` (the annotation) over `note` against `keys`.
pub(super) fn check_signature(
    note: &str,
    signature: &str,
    keys: &[Ed25519PublicKey],
) -> Result<(), SignatureError> {
    let mut parts = signature.splitn(3, ':');
    let (Some("ed25519"), Some(id), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SignatureError::Malformed);
    };
    let sig = B64.decode(sig).map_err(|_| SignatureError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.key_id() == id)
        .ok_or_else(|| SignatureError::UnknownKey(id.to_owned()))?;
    if key.verify(note.as_bytes(), &sig) {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            log: "6f0b4c8e-3f57-4c35-9d55-0e0f8a3b8c11".into(),
            file: 2,
            line: 1,
            seq: 1001,
            head: [0xab; 32],
            time: "2024-05-01T12:00:00.123456Z".into(),
            kind: CheckpointKind::Open,
            prev_file: Some("audit-2024-05-01T12-00-00.123.log".into()),
            unattested: None,
        }
    }

    #[test]
    fn note_format_and_strict_parse() {
        let c = checkpoint();
        let note = c.note();
        assert_eq!(
            note,
            format!(
                "keyward.io/audit/checkpoint/v1\nlog 6f0b4c8e-3f57-4c35-9d55-0e0f8a3b8c11\nfile 2\nline 1\nseq 1001\nhead sha256:{}\ntime 2024-05-01T12:00:00.123456Z\nkind open\nprev-file audit-2024-05-01T12-00-00.123.log\n",
                "ab".repeat(32)
            )
        );
        assert_eq!(Checkpoint::parse_note(&note), Ok(c));
        for bad in [
            note.replace("seq 1001", "seq 01001"),
            note.replace("kind open", "kind opened"),
            note.replace("file 2\n", ""),
            note.replace("keyward.io/audit/checkpoint/v1", "v2"),
            note.replace("sha256:ab", "sha256:AB"),
            format!("{note}extra 1\n"),
        ] {
            assert!(Checkpoint::parse_note(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checkpoint_lines_are_events_that_carry_their_chain() {
        let key = Ed25519SigningKey::generate().unwrap();
        let c = checkpoint();
        let line = c.signed_line(&key).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["kind"], "Event");
        assert_eq!(v["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(v["verb"], CHECKPOINT_VERB);
        assert_eq!(v["user"]["username"], CHECKPOINT_USER);
        assert_eq!(v["stageTimestamp"], "2024-05-01T12:00:00.123456Z");
        let info = parse_line(&line).unwrap();
        assert_eq!((info.seq, info.chain), (1001, [0xab; 32]));
        let (note, sig) = info.checkpoint.unwrap();
        assert_eq!(note, c.note());
        let pk = key.public_key().clone();
        assert_eq!(
            check_signature(&note, &sig, std::slice::from_ref(&pk)),
            Ok(())
        );
        let other = Ed25519SigningKey::generate().unwrap().public_key().clone();
        assert_eq!(
            check_signature(&note, &sig, &[other]),
            Err(SignatureError::UnknownKey(pk.key_id()))
        );
        assert_eq!(
            check_signature(
                &note.replace("seq 1001", "seq 1002"),
                &sig,
                std::slice::from_ref(&pk)
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            check_signature(&note, "", &[pk]),
            Err(SignatureError::Malformed)
        );
        // Rendering is a function of note, signature and position.
        assert_eq!(
            render_checkpoint_line(&note, &c.time, &c.head, c.seq, &sig),
            line
        );
    }

    #[test]
    fn lines_without_chain_annotations_are_refused() {
        for (line, why) in [
            (&b"not json"[..], "not a JSON audit event"),
            (br#"{"kind":"Event"}"#, "no keyward.io/chain"),
            (br#"{"annotations":{"keyward.io/chain":"sha256:00"}}"#, "is not sha256:<hex>"),
            (
                format!(r#"{{"annotations":{{"keyward.io/chain":"sha256:{}","keyward.io/seq":"007"}}}}"#, "0".repeat(64)).as_bytes(),
                "is not a sequence number",
            ),
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn public_key_files_in_every_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let key = Ed25519SigningKey::generate().unwrap();
        let pk = key.public_key();
        for (name, content) in [
            ("pem", pk.to_pem().into_bytes()),
            (
                "b64",
                format!("{}\n", B64.encode(pk.as_bytes())).into_bytes(),
            ),
            ("hex", hex::encode(pk.as_bytes()).into_bytes()),
            ("raw", pk.as_bytes().to_vec()),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            assert_eq!(&read_public_key(&p).unwrap(), pk, "{name}");
        }
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "hello").unwrap();
        assert!(matches!(
            read_public_key(&bad),
            Err(AuditError::PublicKey { .. })
        ));
    }
}
