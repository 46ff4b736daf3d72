//! `shamir:shares=N,threshold=M`: the root key is random and kept wrapped (XChaCha20-Poly1305)
//! under an *unseal key* that exists only as N Shamir shares over GF(256) (the audited `vsss-rs`
//! crate); any M of them rebuild it. Served with bare `shamir`: the plugin starts sealed and
//! operators hand in shares one at a time.
//!
//! A share is one line of text, `kw1-<set>-<threshold>-<x>-<y>-<check>`: the share set's random
//! id (16 hex digits), the threshold, the share's x coordinate (1..=255), its 32 y bytes (hex)
//! and a check (the first 4 bytes of SHA-256 over the rest, hex). A mistyped share fails its
//! check; a share of another set, another threshold or a repeated x is refused before anything is
//! combined; and a forged share that passes all that rebuilds a wrong unseal key, which fails to
//! open the wrapped root key ([`SealError::SharesDoNotOpen`]) instead of yielding a wrong key.
//! Shares and partial state live in zeroizing buffers.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{RootKey, SealError};
use crate::crypto::{self, AeadKey, Algorithm, Key32, KeystreamRng};

/// Version tag that starts every share.
const SHARE_PREFIX: &str = "kw1";
const CHECK_INFO: &[u8] = b"keyward/v1 shamir share\0";
const WRAP_INFO: &[u8] = b"keyward/v1 shamir-root\0";

/// How many shares to make and how many unseal.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShamirParams {
    /// Shares made (threshold..=255).
    pub shares: u8,
    /// Shares needed to unseal (2..=shares).
    pub threshold: u8,
}

impl fmt::Display for ShamirParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "shamir:shares={},threshold={}",
            self.shares, self.threshold
        )
    }
}

impl fmt::Debug for ShamirParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn field_error(field: &str, reason: impl Into<String>) -> SealError {
    SealError::BadField {
        kind: "shamir",
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl FromStr for ShamirParams {
    type Err = SealError;
    /// Parses what follows `shamir:`: `shares=N,threshold=M`, each once, in any order.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut shares, mut threshold) = (None, None);
        for part in s.split(',') {
            let Some((name, value)) = part.split_once('=') else {
                return Err(field_error(
                    part,
                    "expected NAME=VALUE (shares=N,threshold=M)",
                ));
            };
            let slot = match name {
                "shares" => &mut shares,
                "threshold" => &mut threshold,
                other => {
                    return Err(field_error(
                        other,
                        "unknown field; expected shares and threshold",
                    ))
                }
            };
            let n: u8 = value.parse().map_err(|_| {
                field_error(name, format!("{value:?} is not a number from 1 to 255"))
            })?;
            if slot.replace(n).is_some() {
                return Err(field_error(name, "given more than once"));
            }
        }
        let shares = shares.ok_or_else(|| field_error("shares", "required"))?;
        let threshold = threshold.ok_or_else(|| field_error("threshold", "required"))?;
        if threshold < 2 {
            return Err(field_error(
                "threshold",
                "must be at least 2 (one share alone would be the key)",
            ));
        }
        if shares < threshold {
            return Err(field_error(
                "shares",
                format!("{shares} is fewer than the threshold {threshold}"),
            ));
        }
        Ok(ShamirParams { shares, threshold })
    }
}

/// What the keyring stores about a Shamir seal (nothing secret).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShamirRecord {
    /// Shares made.
    pub shares: u8,
    /// Shares needed.
    pub threshold: u8,
    /// The share set's id (hex); every share carries it.
    pub set_id: String,
    /// base64(nonce ‖ XChaCha20-Poly1305(unseal key, root key) ‖ tag).
    pub wrapped: String,
}

/// One share, checked. Its Debug shows the set and index only.
pub struct Share {
    set_id: [u8; 8],
    threshold: u8,
    x: u8,
    y: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Share({}, #{}, [REDACTED])",
            hex::encode(self.set_id),
            self.x
        )
    }
}

impl Share {
    fn check(&self) -> [u8; 4] {
        let mut data = Zeroizing::new(Vec::with_capacity(CHECK_INFO.len() + 42));
        data.extend_from_slice(CHECK_INFO);
        data.extend_from_slice(&self.set_id);
        data.push(self.threshold);
        data.push(self.x);
        data.extend_from_slice(self.y.as_ref());
        let digest = crypto::sha256(&data);
        digest[..4]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes")
    }

    /// The share as one line of text.
    pub fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{SHARE_PREFIX}-{}-{}-{}-{}-{}",
            hex::encode(self.set_id),
            self.threshold,
            self.x,
            Zeroizing::new(hex::encode(self.y.as_ref())).as_str(),
            hex::encode(self.check())
        ))
    }

    /// The share's number (its x coordinate, 1..=255).
    pub fn index(&self) -> u8 {
        self.x
    }

    /// Parses and checks one share (surrounding whitespace ignored). The error never repeats
    /// the share.
    pub fn parse(text: &str) -> Result<Share, SealError> {
        let bad = |why: &str| SealError::Share(why.to_owned());
        let text = text.trim();
        let parts: Vec<&str> = text.split('-').collect();
        let [prefix, set, threshold, x, y, check] = parts.as_slice() else {
            return Err(bad(
                "not a keyward share (expected kw1-SET-THRESHOLD-INDEX-VALUE-CHECK on one line)",
            ));
        };
        if *prefix != SHARE_PREFIX {
            return Err(bad("not a keyward share (it must start with kw1-)"));
        }
        let mut set_id = [0u8; 8];
        hex::decode_to_slice(set, &mut set_id)
            .map_err(|_| bad("the share set id is not 16 hex digits"))?;
        let threshold: u8 = threshold
            .parse()
            .map_err(|_| bad("the threshold is not a number"))?;
        let x: u8 = x.parse().map_err(|_| bad("the index is not a number"))?;
        if x == 0 {
            return Err(bad("the index must be 1 to 255"));
        }
        let mut ybuf = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(y, ybuf.as_mut())
            .map_err(|_| bad("the value is not 64 hex digits"))?;
        let mut want = [0u8; 4];
        hex::decode_to_slice(check, &mut want).map_err(|_| bad("the check is not 8 hex digits"))?;
        let share = Share {
            set_id,
            threshold,
            x,
            y: ybuf,
        };
        if share.check() != want {
            return Err(bad(
                "its check does not match: a character is wrong or missing",
            ));
        }
        Ok(share)
    }
}

/// Freshly made shares, to hand out once. Zeroized on drop.
pub struct SplitShares {
    /// The share set's id (hex).
    pub set_id: String,
    /// Shares needed to unseal.
    pub threshold: u8,
    /// Every share, encoded, in order of index.
    pub shares: Vec<Zeroizing<String>>,
}

impl fmt::Debug for SplitShares {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SplitShares({}, {} of {}, [REDACTED])",
            self.set_id,
            self.threshold,
            self.shares.len()
        )
    }
}

fn wrap_aad(set_id: &[u8; 8], context: &[u8]) -> Vec<u8> {
    let mut aad = WRAP_INFO.to_vec();
    aad.extend_from_slice(set_id);
    aad.extend_from_slice(context);
    aad
}

/// Wraps `root` under a fresh unseal key bound to `context` (the keyring id), splits the unseal
/// key into `params.shares` shares, and returns the record to store and the shares.
pub fn seal_root(
    params: ShamirParams,
    root: &RootKey,
    context: &[u8],
) -> Result<(ShamirRecord, SplitShares), SealError> {
    let unseal = Key32::generate()?;
    let set_id = crypto::random_array::<8>()?;
    let mut rng = KeystreamRng::new()?;
    let raw = Zeroizing::new(
        vsss_rs::Gf256::split_bytes(
            usize::from(params.threshold),
            usize::from(params.shares),
            unseal.expose(),
            &mut rng,
        )
        .map_err(|e| SealError::Share(format!("cannot split the key: {e:?}")))?,
    );
    let mut shares = Vec::with_capacity(raw.len());
    for bytes in raw.iter() {
        let (x, y) = bytes
            .split_first()
            .ok_or_else(|| SealError::Share("the splitter returned an empty share".into()))?;
        let mut ybuf = Zeroizing::new([0u8; 32]);
        if y.len() != 32 {
            return Err(SealError::Share(
                "the splitter returned a short share".into(),
            ));
        }
        ybuf.copy_from_slice(y);
        let share = Share {
            set_id,
            threshold: params.threshold,
            x: *x,
            y: ybuf,
        };
        shares.push(share.encode());
    }
    let wrapped = AeadKey::new(Algorithm::XChaCha20Poly1305, &unseal)
        .seal_random_nonce(&wrap_aad(&set_id, context), root.key().expose())?;
    let record = ShamirRecord {
        shares: params.shares,
        threshold: params.threshold,
        set_id: hex::encode(set_id),
        wrapped: B64.encode(wrapped),
    };
    Ok((
        record,
        SplitShares {
            set_id: hex::encode(set_id),
            threshold: params.threshold,
            shares,
        },
    ))
}

/// Shares handed in so far for one sealed keyring, checked as they come; rebuilds the root key
/// once the threshold is met. Dropping it zeroizes the shares.
pub struct ShareCollector {
    set_id: [u8; 8],
    threshold: u8,
    shares: u8,
    wrapped: Vec<u8>,
    context: Vec<u8>,
    given: Vec<Share>,
}

impl fmt::Debug for ShareCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ShareCollector({}, {} of {})",
            hex::encode(self.set_id),
            self.given.len(),
            self.threshold
        )
    }
}

impl ShareCollector {
    /// A collector for the keyring whose seal record is `record` and id `context`.
    pub fn new(record: &ShamirRecord, context: &[u8]) -> Result<ShareCollector, SealError> {
        let corrupt = |why: &str| SealError::Share(format!("the keyring's Shamir record {why}"));
        let mut set_id = [0u8; 8];
        hex::decode_to_slice(&record.set_id, &mut set_id)
            .map_err(|_| corrupt("has a bad set id"))?;
        let wrapped = B64
            .decode(&record.wrapped)
            .map_err(|_| corrupt("has a wrapped key that is not base64"))?;
        if record.threshold < 2 || record.shares < record.threshold {
            return Err(corrupt("has impossible counts"));
        }
        Ok(ShareCollector {
            set_id,
            threshold: record.threshold,
            shares: record.shares,
            wrapped,
            context: context.to_vec(),
            given: Vec::new(),
        })
    }

    /// Shares accepted so far.
    pub fn given(&self) -> u8 {
        self.given.len() as u8
    }

    /// Shares needed.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// Shares made for this keyring.
    pub fn shares(&self) -> u8 {
        self.shares
    }

    /// The share set's id (hex).
    pub fn set_id(&self) -> String {
        hex::encode(self.set_id)
    }

    /// Forgets every share given so far.
    pub fn reset(&mut self) {
        self.given.clear();
    }

    /// Checks `text` and keeps it. Refuses (keeping the others) a malformed share, one of
    /// another share set or threshold, and a repeated one.
    pub fn add(&mut self, text: &str) -> Result<(), SealError> {
        let share = Share::parse(text)?;
        if share.set_id != self.set_id {
            return Err(SealError::Share(format!(
                "it belongs to share set {}, but this keyring was split into set {}",
                hex::encode(share.set_id),
                hex::encode(self.set_id)
            )));
        }
        if share.threshold != self.threshold {
            return Err(SealError::Share(format!(
                "it is for a threshold of {}, but this keyring needs {}",
                share.threshold, self.threshold
            )));
        }
        if self.given.iter().any(|s| s.x == share.x) {
            return Err(SealError::Share(format!(
                "share #{} was already given",
                share.x
            )));
        }
        if self.given.len() >= usize::from(self.threshold) {
            return Err(SealError::Share("enough shares were already given".into()));
        }
        self.given.push(share);
        Ok(())
    }

    /// Whether enough shares were given to try [`ShareCollector::open`].
    pub fn complete(&self) -> bool {
        self.given.len() >= usize::from(self.threshold)
    }

    /// Rebuilds the unseal key from the shares given and opens the root key with it. Whatever
    /// the outcome, the shares are forgotten; a wrong result is [`SealError::SharesDoNotOpen`].
    pub fn open(&mut self) -> Result<RootKey, SealError> {
        let given = std::mem::take(&mut self.given);
        let mut raw: Zeroizing<Vec<Vec<u8>>> = Zeroizing::new(
            given
                .iter()
                .map(|s| {
                    let mut v = Vec::with_capacity(33);
                    v.push(s.x);
                    v.extend_from_slice(s.y.as_ref());
                    v
                })
                .collect(),
        );
        drop(given);
        let combined = vsss_rs::Gf256::combine_bytes(raw.as_slice())
            .map(Zeroizing::new)
            .map_err(|_| SealError::SharesDoNotOpen);
        raw.zeroize();
        let combined = combined?;
        let unseal = Key32::from_slice(&combined).ok_or(SealError::SharesDoNotOpen)?;
        let root = AeadKey::new(Algorithm::XChaCha20Poly1305, &unseal)
            .open_with_nonce(&wrap_aad(&self.set_id, &self.context), &self.wrapped)
            .map_err(|_| SealError::SharesDoNotOpen)?;
        Key32::from_slice(&root)
            .map(RootKey::from_key)
            .ok_or(SealError::SharesDoNotOpen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(shares: u8, threshold: u8) -> ShamirParams {
        ShamirParams { shares, threshold }
    }

    #[test]
    fn params_parse_strictly() {
        assert_eq!(
            "shares=5,threshold=3".parse::<ShamirParams>().unwrap(),
            params(5, 3)
        );
        assert_eq!(
            "threshold=2,shares=2".parse::<ShamirParams>().unwrap(),
            params(2, 2)
        );
        for (bad, want) in [
            ("shares=5", "threshold: required"),
            ("shares=5,threshold=1", "threshold: must be at least 2"),
            (
                "shares=2,threshold=3",
                "shares: 2 is fewer than the threshold 3",
            ),
            ("shares=x,threshold=3", "shares: \"x\" is not a number"),
            ("shares=300,threshold=3", "shares: \"300\" is not a number"),
            ("shares=5,threshold=3,n=1", "n: unknown field"),
            (
                "shares=5,shares=5,threshold=3",
                "shares: given more than once",
            ),
            ("5/3", "5/3: expected NAME=VALUE"),
        ] {
            let e = bad.parse::<ShamirParams>().unwrap_err().to_string();
            assert!(
                e.starts_with("invalid seal shamir: ") && e.contains(want),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn any_threshold_of_shares_opens_and_wrong_or_mixed_ones_never_do() {
        let root = RootKey::generate().unwrap();
        let (record, split) = seal_root(params(5, 3), &root, b"keyring-1").unwrap();
        assert_eq!(split.shares.len(), 5);
        for pick in [[0, 1, 2], [4, 2, 0], [1, 3, 4]] {
            let mut c = ShareCollector::new(&record, b"keyring-1").unwrap();
            for i in pick {
                assert!(!c.complete());
                c.add(&split.shares[i]).unwrap();
            }
            assert!(c.complete());
            assert_eq!(c.open().unwrap().key().expose(), root.key().expose());
            assert_eq!(c.given(), 0, "shares are forgotten after an attempt");
        }
        // Repeats, another set, typos.
        let mut c = ShareCollector::new(&record, b"keyring-1").unwrap();
        c.add(&split.shares[0]).unwrap();
        let e = c.add(&split.shares[0]).unwrap_err().to_string();
        assert!(e.contains("already given"), "{e}");
        let (_, other) = seal_root(params(5, 3), &root, b"keyring-1").unwrap();
        let e = c.add(&other.shares[1]).unwrap_err().to_string();
        assert!(e.contains("belongs to share set"), "{e}");
        let mut typo = split.shares[1].to_string();
        let at = typo.len() - 20;
        let flipped = if &typo[at..=at] == "0" { "1" } else { "0" };
        typo.replace_range(at..=at, flipped);
        let e = c.add(&typo).unwrap_err().to_string();
        assert!(
            e.contains("check does not match") && !e.contains(&typo),
            "{e}"
        );
        assert_eq!(c.given(), 1, "refused shares leave the others");
        // A forged share with a valid check rebuilds a wrong key, which opens nothing.
        let mut forged = Share::parse(&split.shares[1]).unwrap();
        forged.y[0] ^= 1;
        c.add(&forged.encode()).unwrap();
        c.add(&split.shares[2]).unwrap();
        assert!(matches!(c.open(), Err(SealError::SharesDoNotOpen)));
        // The right shares for another keyring id open nothing either.
        let mut c = ShareCollector::new(&record, b"keyring-2").unwrap();
        for s in &split.shares[..3] {
            c.add(s).unwrap();
        }
        assert!(matches!(c.open(), Err(SealError::SharesDoNotOpen)));
    }

    #[test]
    fn shares_are_redacted_and_malformed_text_is_named() {
        let root = RootKey::generate().unwrap();
        let (_, split) = seal_root(params(2, 2), &root, b"k").unwrap();
        let s = Share::parse(&format!("  {}\n", split.shares[0].as_str())).unwrap();
        assert!(!format!("{s:?}").contains(&hex::encode(s.y.as_ref())));
        assert!(!format!("{split:?}").contains(split.shares[0].as_str()));
        for (bad, want) in [
            ("", "not a keyward share"),
            ("kw2-00-2-1-00-00", "must start with kw1-"),
            ("kw1-zz-2-1-00-00", "set id"),
        ] {
            let e = Share::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
