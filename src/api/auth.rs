//! Client authentication on the store's TCP listener: a verified client certificate, or a
//! bearer token from the operator's tokens file, compared in constant time.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::{Code, Request, Status};
use zeroize::Zeroizing;

use super::Reason;

/// Bearer tokens accepted on the TCP listener, one per line in a file (blank lines and `#`
/// comments ignored). Compared in constant time.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Vec<Zeroizing<Vec<u8>>>>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} tokens)", self.0.len())
    }
}

impl Tokens {
    /// Parses a tokens file's content. Each token must be at least 16 characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.len() < 16 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "line {}: a token must be at least 16 characters with no spaces",
                    i + 1
                ));
            }
            out.push(Zeroizing::new(t.as_bytes().to_vec()));
        }
        if out.is_empty() {
            return Err("the tokens file holds no token".into());
        }
        Ok(Self(Arc::new(out)))
    }

    /// Whether `presented` equals one of the tokens (every token is compared, in constant time
    /// per token).
    pub fn check(&self, presented: &[u8]) -> bool {
        let mut ok = subtle::Choice::from(0u8);
        for t in self.0.iter() {
            ok |= t.as_slice().ct_eq(presented);
        }
        ok.into()
    }
}

/// Authenticates a request on the TCP listener: a verified client certificate, or an
/// `authorization: Bearer <token>` header matching [`Tokens`].
#[derive(Clone, Debug)]
pub struct Authenticator {
    /// Client certificates verified by the TLS layer are accepted.
    pub client_certs: bool,
    /// Bearer tokens, if any.
    pub tokens: Option<Tokens>,
}

impl Authenticator {
    /// Checks one request's credentials.
    #[allow(clippy::result_large_err)] // tonic's interceptor signature
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.client_certs && req.peer_certs().is_some_and(|c| !c.is_empty()) {
            return Ok(req);
        }
        if let Some(tokens) = &self.tokens {
            if let Some(h) = req.metadata().get("authorization") {
                if let Some(t) = h.as_bytes().strip_prefix(b"Bearer ") {
                    if tokens.check(t) {
                        return Ok(req);
                    }
                }
                return Err(unauthorized("invalid bearer token"));
            }
        }
        Err(unauthorized(
            "client authentication required: a client certificate or an authorization: Bearer token",
        ))
    }
}

/// Missing or wrong credentials: `Unauthenticated` with [`Reason::Unauthorized`].
fn unauthorized(message: &str) -> Status {
    Reason::Unauthorized.status(Code::Unauthenticated, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_rules_and_constant_time_check() {
        let t = Tokens::parse("# ops\n\n0123456789abcdef\nsecond-token-long-enough\n").unwrap();
        assert!(t.check(b"0123456789abcdef"));
        assert!(t.check(b"second-token-long-enough"));
        assert!(!t.check(b"0123456789abcdeX"));
        assert!(!t.check(b""));
        assert!(!format!("{t:?}").contains("0123"));
        assert!(Tokens::parse("short\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("# only comments\n").is_err());
        assert!(Tokens::parse("has a space in it!!\n").is_err());
    }
}
