//! Static bearer tokens from a file, reloaded when it changes ([`super::reload`]).
//!
//! Two formats ([`TokenFileFormat`]):
//! - **`--token-auth-file`**, kube-apiserver's CSV (`tokenfile.NewCSV`): `token,user,uid` then
//!   optional groups, `token,user,uid,"group1,group2"`. Go's `encoding/csv` rules: comma
//!   separated, RFC 4180 quoting (`""` inside quotes), blank lines skipped, a CSV syntax error
//!   fails the file. At least 3 columns; the 4th is split on `,` into groups (no trimming);
//!   columns 5 and later are ignored; a record with an empty token is skipped with a warning; a
//!   duplicate token warns and the later record wins.
//! - **`--tokens-file`**, keyward's older format: one token per line (at least 16 characters, no
//!   spaces; blank lines and `#` comments ignored; at least one token). These tokens always
//!   granted full access, so each maps to user `token:<first 8 hex digits of its SHA-256>` in
//!   group `system:masters`, no uid.
//!
//! Both files must be private (mode 0600). Unlike kube-apiserver's map lookup, a presented token
//! is compared with every token in constant time (SHA-256 digests, [`crate::crypto::ct_position`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::reload::{FileAccess, FileStatus, Reload, ReloadOutcome, WatchedFile};
use super::{names, AuthnError, BearerToken, Identity, TokenAuthenticator};
use crate::crypto::{ct_position, sha256};

/// The format of a token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFileFormat {
    /// kube-apiserver's `--token-auth-file` CSV.
    Csv,
    /// keyward's `--tokens-file`: one token per line, each granting `system:masters`.
    Lines,
}

/// Tokens and the identity each one authenticates (without `system:authenticated`).
pub struct TokenTable {
    digests: Vec<[u8; 32]>,
    identities: Vec<Identity>,
}

impl super::reload::Entries for TokenTable {
    fn lists_nothing(&self) -> bool {
        self.digests.is_empty()
    }
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenTable({} tokens)", self.digests.len())
    }
}

/// Go `encoding/csv` errors.
const ERR_BARE_QUOTE: &str = "bare \" in non-quoted-field";
const ERR_QUOTE: &str = "extraneous or missing \" in quoted-field";

fn parse_error(start_line: usize, line: usize, column: usize, err: &str) -> String {
    if start_line != line {
        format!("record on line {start_line}; parse error on line {line}, column {column}: {err}")
    } else {
        format!("parse error on line {line}, column {column}: {err}")
    }
}

/// Reads CSV records as Go's `encoding/csv` does with `FieldsPerRecord = -1`: each record with
/// the line it starts on. Errors name a line and column, never a value.
fn read_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    // Physical lines without their newline ("\r\n" counts as "\n"; a final "\r" before the end
    // of the file is dropped, as Go does).
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    for l in lines.iter_mut() {
        *l = match l.strip_suffix('\n') {
            Some(body) => body.strip_suffix('\r').unwrap_or(body),
            None => l.strip_suffix('\r').unwrap_or(l),
        };
    }
    let mut records = Vec::new();
    let mut n = 0;
    while n < lines.len() {
        let start = n;
        if lines[n].is_empty() {
            n += 1;
            continue;
        }
        let mut fields = Vec::new();
        let mut pos = 0;
        'fields: loop {
            let line = lines[n];
            if !line[pos..].starts_with('"') {
                let rest = &line[pos..];
                let end = rest.find(',').unwrap_or(rest.len());
                if let Some(q) = rest[..end].find('"') {
                    return Err(parse_error(start + 1, n + 1, pos + q + 1, ERR_BARE_QUOTE));
                }
                fields.push(rest[..end].to_owned());
                if end == rest.len() {
                    break 'fields;
                }
                pos += end + 1;
                continue 'fields;
            }
            // A quoted field, possibly over several lines.
            let mut field = String::new();
            pos += 1;
            loop {
                let line = lines[n];
                let rest = &line[pos..];
                match rest.find('"') {
                    Some(q) => {
                        field.push_str(&rest[..q]);
                        let after = &rest[q + 1..];
                        if after.starts_with('"') {
                            field.push('"');
                            pos += q + 2;
                        } else if after.starts_with(',') {
                            fields.push(field);
                            pos += q + 2;
                            continue 'fields;
                        } else if after.is_empty() {
                            fields.push(field);
                            break 'fields;
                        } else {
                            return Err(parse_error(start + 1, n + 1, pos + q + 2, ERR_QUOTE));
                        }
                    }
                    None => {
                        field.push_str(rest);
                        field.push('\n');
                        if n + 1 == lines.len() {
                            return Err(parse_error(start + 1, n + 1, line.len() + 1, ERR_QUOTE));
                        }
                        n += 1;
                        pos = 0;
                    }
                }
            }
        }
        records.push((start + 1, fields));
        n += 1;
    }
    Ok(records)
}

impl TokenTable {
    /// Parses kube-apiserver's CSV token file; `source` (the path) appears in messages as
    /// kube-apiserver prints it.
    pub fn parse_csv(bytes: &[u8], source: &str) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_string())?;
        let mut table = TokenTable {
            digests: Vec::new(),
            identities: Vec::new(),
        };
        for (record_num, (_, record)) in read_csv(text)?.into_iter().enumerate() {
            let record_num = record_num + 1;
            if record.len() < 3 {
                return Err(format!(
                    "token file '{source}' must have at least 3 columns (token, user name, user uid), found {}",
                    record.len()
                ));
            }
            if record[0].is_empty() {
                tracing::warn!("empty token has been found in token file '{source}', record number '{record_num}'");
                continue;
            }
            let groups = record
                .get(3)
                .map(|g| g.split(',').map(str::to_owned).collect())
                .unwrap_or_default();
            let identity = Identity::new(record[1].clone(), record[2].clone(), groups);
            let digest = sha256(record[0].as_bytes());
            match table.digests.iter().position(|d| *d == digest) {
                Some(i) => {
                    tracing::warn!("duplicate token has been found in token file '{source}', record number '{record_num}'");
                    table.identities[i] = identity;
                }
                None => {
                    table.digests.push(digest);
                    table.identities.push(identity);
                }
            }
        }
        Ok(table)
    }

    /// Parses keyward's one-token-per-line file (the rules and messages of `--tokens-file`).
    pub fn parse_lines(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
        let mut table = TokenTable {
            digests: Vec::new(),
            identities: Vec::new(),
        };
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
            let digest = sha256(t.as_bytes());
            if table.digests.contains(&digest) {
                continue;
            }
            let name = format!("token:{}", hex::encode(&digest[..4]));
            table.digests.push(digest);
            table.identities.push(Identity::new(
                name,
                "",
                vec![names::SYSTEM_MASTERS.to_owned()],
            ));
        }
        if table.digests.is_empty() {
            return Err("the tokens file holds no token".into());
        }
        Ok(table)
    }

    /// Parses `bytes` in `format`.
    pub fn parse(bytes: &[u8], format: TokenFileFormat, source: &str) -> Result<Self, String> {
        match format {
            TokenFileFormat::Csv => Self::parse_csv(bytes, source),
            TokenFileFormat::Lines => Self::parse_lines(bytes),
        }
    }

    /// The identity of `token` (without `system:authenticated`), comparing it with every token
    /// in constant time.
    pub fn lookup(&self, token: &str) -> Option<Identity> {
        let digest = sha256(token.as_bytes());
        ct_position(&digest, &self.digests).map(|i| self.identities[i].clone())
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// A token file as a [`TokenAuthenticator`], reloaded by a [`super::reload::Reloader`] given
/// [`StaticTokens::reloadable`].
#[derive(Debug, Clone)]
pub struct StaticTokens {
    file: Arc<WatchedFile<TokenTable>>,
}

impl StaticTokens {
    /// Reads the private (mode 0600) token file at `path` in `format`. The error names the file
    /// and what is wrong (never a token).
    pub fn load(path: impl Into<PathBuf>, format: TokenFileFormat) -> Result<Self, AuthnError> {
        let path = path.into();
        let source = path.display().to_string();
        let what = match format {
            TokenFileFormat::Csv => "token file",
            TokenFileFormat::Lines => "tokens file",
        };
        let file = WatchedFile::load(path, FileAccess::Private, what, move |b| {
            TokenTable::parse(b, format, &source)
        })?;
        Ok(Self {
            file: Arc::new(file),
        })
    }

    /// The identity of `token`, with `system:authenticated`; `None` if it is not in the file.
    pub fn lookup(&self, token: &str) -> Option<Identity> {
        self.file
            .current()
            .lookup(token)
            .map(Identity::with_authenticated_group)
    }

    /// The file, for a [`super::reload::Reloader`].
    pub fn reloadable(&self) -> Arc<dyn Reload> {
        self.file.clone()
    }

    /// Re-reads the file now.
    pub fn check_now(&self) -> ReloadOutcome {
        self.file.check_now()
    }

    /// The file's reload status (for health).
    pub fn status(&self) -> FileStatus {
        self.file.status()
    }
}

#[async_trait::async_trait]
impl TokenAuthenticator for StaticTokens {
    async fn authenticate_token(
        &self,
        token: &BearerToken,
    ) -> Result<Option<Identity>, AuthnError> {
        Ok(self.lookup(token.expose()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn csv(text: &str) -> Result<TokenTable, String> {
        TokenTable::parse_csv(text.as_bytes(), "/tmp/tokens.csv")
    }

    fn user(name: &str, uid: &str, groups: &[&str]) -> Identity {
        Identity::new(name, uid, groups.iter().map(|g| g.to_string()).collect())
    }

    /// Upstream `TestTokenFile` (k8s.io/apiserver/pkg/authentication/token/tokenfile).
    #[test]
    fn upstream_token_file() {
        let auth = csv(r#"
token1,user1,uid1
token2,user2,uid2
token3,user3,uid3,"group1,group2"
token4,user4,uid4,"group2"
token5,user5,uid5,group5
token6,user6,uid6,group5,otherdata
token7,user7,uid7,"group1,group2",otherdata
"#)
        .unwrap();
        let cases: &[(&str, Option<Identity>)] = &[
            ("token1", Some(user("user1", "uid1", &[]))),
            ("token2", Some(user("user2", "uid2", &[]))),
            ("token3", Some(user("user3", "uid3", &["group1", "group2"]))),
            ("token4", Some(user("user4", "uid4", &["group2"]))),
            ("token5", Some(user("user5", "uid5", &["group5"]))),
            ("token6", Some(user("user6", "uid6", &["group5"]))),
            ("token7", Some(user("user7", "uid7", &["group1", "group2"]))),
            ("token8", None),
        ];
        for (i, (token, want)) in cases.iter().enumerate() {
            assert_eq!(&auth.lookup(token), want, "{i}: {token}");
        }
    }

    /// Upstream `TestBadTokenFile`.
    #[test]
    fn upstream_bad_token_file() {
        let e = csv("\ntoken1,user1,uid1\ntoken2,user2,uid2\ntoken3,user3\ntoken4\n")
            .err()
            .unwrap();
        assert_eq!(e, "token file '/tmp/tokens.csv' must have at least 3 columns (token, user name, user uid), found 2");
        assert!(!e.contains("token3"));
    }

    /// Upstream `TestInsufficientColumnsTokenFile`.
    #[test]
    fn upstream_insufficient_columns_token_file() {
        assert!(csv("token4\n").is_err());
    }

    /// Upstream `TestEmptyTokenTokenFile`.
    #[test]
    fn upstream_empty_token_token_file() {
        let t = csv(",user5,uid5\n").unwrap();
        assert_eq!(t.len(), 0, "empty token should not be recorded");
    }

    #[test]
    fn csv_grammar_as_go_reads_it() {
        // Duplicate: the later record wins.
        let t = csv("tok,a,1\ntok,b,2,g\n").unwrap();
        assert_eq!(
            (t.len(), t.lookup("tok")),
            (1, Some(user("b", "2", &["g"])))
        );
        // CRLF, blank lines, a quoted quote, a field over two lines, an empty 4th column.
        let t = csv("\r\nt1,\"u\"\"q\",1\r\n\r\nt2,u2,2,\"g1,\ng2\"\nt3,u3,3,\n").unwrap();
        assert_eq!(t.lookup("t1"), Some(user("u\"q", "1", &[])));
        assert_eq!(t.lookup("t2"), Some(user("u2", "2", &["g1", "\ng2"])));
        assert_eq!(t.lookup("t3"), Some(user("u3", "3", &[""])));
        // No final newline; a final "\r" is dropped.
        let t = csv("t1,u1,1,g\r").unwrap();
        assert_eq!(t.lookup("t1"), Some(user("u1", "1", &["g"])));
        // Syntax errors name line and column, never the content.
        assert_eq!(
            csv("t1,u\"1,1\n").err().unwrap(),
            "parse error on line 1, column 5: bare \" in non-quoted-field"
        );
        assert_eq!(
            csv("t1,\"u1\"x,1\n").err().unwrap(),
            "parse error on line 1, column 8: extraneous or missing \" in quoted-field"
        );
        let e = csv("t1,u1,1\nsecret-token,\"u2,2\n").err().unwrap();
        assert!(e.starts_with("parse error on line 2, column "), "{e}");
        assert!(!e.contains("secret"), "{e}");
        assert_eq!(
            csv("t1,\"u1\nx\"y,1\n").err().unwrap(),
            "record on line 1; parse error on line 2, column 3: extraneous or missing \" in quoted-field"
        );
        // A whitespace-only line is a record of one column.
        assert!(csv("  \n").err().unwrap().contains("found 1"));
        assert!(TokenTable::parse_csv(b"\xff,a,b", "f").is_err());
    }

    #[test]
    fn lines_format_keeps_the_tokens_file_rules() {
        let t = TokenTable::parse_lines(b"# ops\n\n0123456789abcdef\nsecond-token-long-enough\n")
            .unwrap();
        let id = t.lookup("0123456789abcdef").unwrap();
        let digest = hex::encode(sha256(b"0123456789abcdef"));
        assert_eq!(id.name, format!("token:{}", &digest[..8]));
        assert_eq!(id.groups, [names::SYSTEM_MASTERS]);
        assert!(t.lookup("second-token-long-enough").is_some());
        assert!(t.lookup("0123456789abcdeX").is_none());
        assert!(t.lookup("").is_none());
        let e = TokenTable::parse_lines(b"short\n").err().unwrap();
        assert_eq!(
            e,
            "line 1: a token must be at least 16 characters with no spaces"
        );
        assert!(TokenTable::parse_lines(b"# only comments\n").is_err());
        assert!(TokenTable::parse_lines(b"has a space in it!!\n").is_err());
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[tokio::test]
    async fn static_tokens_reload_and_stay_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.csv");
        let write = |text: &str| {
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
        };
        write("tok-a,alice,u1,\"dev,ops\"\n");
        let auth = StaticTokens::load(&p, TokenFileFormat::Csv).unwrap();
        let got = auth
            .authenticate_token(&BearerToken::new("tok-a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.name, "alice");
        assert_eq!(got.groups, ["dev", "ops", names::SYSTEM_AUTHENTICATED]);
        assert_eq!(
            auth.authenticate_token(&BearerToken::new("tok-b"))
                .await
                .unwrap(),
            None
        );

        write("tok-b,bob,u2\n");
        assert_eq!(auth.check_now(), ReloadOutcome::Applied);
        assert!(auth.lookup("tok-a").is_none());
        assert_eq!(auth.lookup("tok-b").unwrap().name, "bob");

        // An invalid file keeps the tokens in force and says why, without the token.
        write("tok-c,carol\n");
        let ReloadOutcome::Failed { error } = auth.check_now() else {
            panic!("expected a failure")
        };
        assert!(error.contains("at least 3 columns"), "{error}");
        assert!(!error.contains("tok-c"));
        assert_eq!(auth.status().last_error.as_deref(), Some(error.as_str()));
        assert_eq!(auth.lookup("tok-b").unwrap().name, "bob");

        // As kube-apiserver's CSV reader, a reload knows no comments: a line starting with `#`
        // is a token, so a file of only such lines is not empty; one of blank lines is.
        write("#hash-token,hal,u3\n");
        assert_eq!(auth.check_now(), ReloadOutcome::Applied);
        assert_eq!(auth.lookup("#hash-token").unwrap().name, "hal");
        write("\n\n");
        let ReloadOutcome::Failed { error } = auth.check_now() else {
            panic!("expected a failure")
        };
        assert!(error.contains("has no entries"), "{error}");
        assert_eq!(auth.lookup("#hash-token").unwrap().name, "hal");

        // A token file readable by others is refused on load.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = StaticTokens::load(&p, TokenFileFormat::Csv).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        assert!(!format!("{auth:?}").contains("tok-b"));
    }
}
