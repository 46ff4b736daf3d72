//! The store's keys in the backend as kube-apiserver lays them out: the `--etcd-prefix` rooted
//! and cleaned as its `path.Join("/", prefix)`, and the continue tokens of paged lists, in its
//! format and with its checks.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use super::StoreError;
use crate::backend::Revision;
use crate::go_json::GoField;

/// What a list's continue token holds, in kube-apiserver's format (`storage.EncodeContinue`):
/// `{"v":"meta.k8s.io/v1","rv":N,"start":KEY}`, base64url without padding, `KEY` the key the
/// next page starts at with the list's key prefix cut off. Revision -1 continues at the
/// current revision: the token kube-apiserver hands out with the 410 for a continue token whose
/// revision was compacted.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct ContinueToken {
    #[serde(rename = "v", default)]
    version: String,
    #[serde(default)]
    rv: i64,
    #[serde(default)]
    start: String,
}

/// The only version of continue tokens.
const CONTINUE_VERSION: &str = "meta.k8s.io/v1";

/// Go's `base64.RawURLEncoding`, which continue tokens are written in: no padding, and bits
/// left over after the last byte are ignored when decoding.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

/// [`StoreError::BadContinue`] saying `why`, kube-apiserver's `continue key is not valid...`.
fn bad_continue(why: impl Into<String>) -> StoreError {
    StoreError::BadContinue { why: why.into() }
}

impl ContinueToken {
    /// The token that continues a list of keys under `prefix` at `key`, read at revision `rv`.
    pub(super) fn encode(key: &[u8], prefix: &str, rv: i64) -> String {
        let key = String::from_utf8_lossy(key);
        let token = ContinueToken {
            version: CONTINUE_VERSION.to_owned(),
            rv,
            start: key.strip_prefix(prefix).unwrap_or(&key).to_owned(),
        };
        B64URL.encode(serde_json::to_vec(&token).unwrap_or_default())
    }

    /// The key a token `t` of a list of keys under `prefix` starts at, and its revision
    /// (`None`: the current one), checked as kube-apiserver's `storage.DecodeContinue` checks
    /// it: a start key that `path.Clean` would change (`..`, `//`) is refused, so that the
    /// list never ranges outside `prefix`.
    pub(super) fn decode(t: &str, prefix: &str) -> Result<(Vec<u8>, Option<Revision>), StoreError> {
        const INVALID: &str = "continue key is not valid";
        // Go's `CorruptInputError`: the offset of the first byte it could not use.
        let at =
            |at: usize| bad_continue(format!("{INVALID}: illegal base64 data at input byte {at}"));
        let raw = B64URL.decode(t).map_err(|e| match e {
            base64::DecodeError::InvalidByte(i, _)
            | base64::DecodeError::InvalidLastSymbol(i, _) => at(i),
            // One symbol left over after the last whole group.
            base64::DecodeError::InvalidLength(n) => at(n.saturating_sub(1)),
            base64::DecodeError::InvalidPadding => at(t.find('=').unwrap_or_default()),
        })?;
        let tok: ContinueToken = serde_json::from_slice(&raw).map_err(|_| {
            // kube-apiserver appends what Go's decoder said.
            let fields = [
                ("v", GoField::String),
                ("rv", GoField::Int64),
                ("start", GoField::String),
            ];
            match crate::go_json::unmarshal_struct(&raw, "storage.continueToken", &fields) {
                Some(e) => bad_continue(format!("{INVALID}: {e}")),
                None => bad_continue(INVALID),
            }
        })?;
        if tok.version != CONTINUE_VERSION {
            return Err(bad_continue(format!(
                "{INVALID}: server does not recognize this encoded version {}",
                tok.version
            )));
        }
        if tok.rv == 0 {
            return Err(bad_continue(format!(
                "{INVALID}: incorrect encoded start resourceVersion (version {CONTINUE_VERSION})"
            )));
        }
        if tok.start.is_empty() {
            return Err(bad_continue(format!(
                "{INVALID}: encoded start key empty (version {CONTINUE_VERSION})"
            )));
        }
        let rooted = match tok.start.strip_prefix('/') {
            Some(rest) => rest,
            None => tok.start.as_str(),
        };
        if !is_clean_path(rooted) {
            return Err(bad_continue(format!("{INVALID}: {}", tok.start)));
        }
        let revision = match tok.rv {
            -1 => None,
            rv => Some(Revision::new(rv).ok_or_else(|| bad_continue(INVALID))?),
        };
        Ok((format!("{prefix}{rooted}").into_bytes(), revision))
    }
}

/// `prefix` as kube-apiserver roots it (Go's `path.Join("/", prefix)`: `registry`,
/// `/registry/` and `/a//b/../registry` are all `/registry`), without a trailing `/`; `""`
/// for the root.
pub(super) fn rooted_clean(prefix: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in prefix.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.iter().map(|p| format!("/{p}")).collect()
}

/// Whether `/` followed by `rest` is a path Go's `path.Clean` leaves as it is: no empty, `.`
/// or `..` element, and no trailing slash.
fn is_clean_path(rest: &str) -> bool {
    rest.is_empty()
        || rest
            .split('/')
            .all(|e| !e.is_empty() && e != "." && e != "..")
}

#[cfg(test)]
mod tests {
    use super::rooted_clean;

    /// `--etcd-prefix` as kube-apiserver roots it (`path.Join("/", prefix)`), so that both
    /// given one prefix use the same keys.
    #[test]
    fn prefixes_are_rooted_and_cleaned_as_kube_apiserver_does() {
        for (given, want) in [
            ("/registry", "/registry"),
            ("registry", "/registry"),
            ("/registry/", "/registry"),
            ("", ""),
            ("/", ""),
            ("/pfx//x", "/pfx/x"),
            ("/a/./b", "/a/b"),
            ("/a/../registry", "/registry"),
            ("/../x", "/x"),
            ("..", ""),
        ] {
            assert_eq!(rooted_clean(given), want, "{given:?}");
        }
    }
}
