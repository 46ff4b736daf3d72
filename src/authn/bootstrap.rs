//! Bootstrap tokens, exactly as kube-apiserver's bootstrap token authenticator
//! (`plugin/pkg/auth/authenticator/token/bootstrap`) and `k8s.io/cluster-bootstrap` check them.
//!
//! A token `<id>.<secret>` (`\A([a-z0-9]{6})\.([a-z0-9]{16})\z`) is backed by a Secret
//! `bootstrap-token-<id>` in `kube-system` of type `bootstrap.kubernetes.io/token`. In order:
//!
//! 1. a token not of that form: no opinion;
//! 2. no such Secret: no opinion (another lookup error is an error);
//! 3. a Secret being deleted: keyward deletes at once (no `deletionTimestamp`), so step 2
//!    covers it;
//! 4. wrong type, or no data;
//! 5. `token-secret` differs (compared in constant time);
//! 6. `token-id` differs;
//! 7. expired (`expiration`, RFC 3339: empty never expires, unparseable counts as expired);
//! 8. `usage-bootstrap-authentication` is not exactly `"true"`;
//! 9. an `auth-extra-groups` entry does not match
//!    `\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\z`;
//! 10. the user is `system:bootstrap:<id>`, no uid, groups `system:bootstrappers` plus the
//!     extra groups, de-duplicated and sorted (then `system:authenticated`).
//!
//! Steps 4 to 9 are "not authenticated" with a debug log line that names the Secret, never the
//! presented secret (upstream logs it: kubernetes/kubernetes#119630).

use std::sync::Arc;
use std::time::SystemTime;

use super::{AuthnError, BearerToken, Identity, SecretLookup, TokenAuthenticator};
use crate::crypto::{ct_eq, fill_random, CryptoError};
use crate::store::Secret;

/// Namespace of bootstrap token Secrets.
pub const NAMESPACE: &str = "kube-system";
/// Name prefix of bootstrap token Secrets: `bootstrap-token-<id>`.
pub const SECRET_NAME_PREFIX: &str = "bootstrap-token-";
/// Type of bootstrap token Secrets.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Data key of the public token id.
pub const TOKEN_ID_KEY: &str = "token-id";
/// Data key of the token secret.
pub const TOKEN_SECRET_KEY: &str = "token-secret";
/// Data key of the absolute RFC 3339 expiry.
pub const EXPIRATION_KEY: &str = "expiration";
/// Data key of a free-form description.
pub const DESCRIPTION_KEY: &str = "description";
/// Data key of extra groups (comma-separated).
pub const EXTRA_GROUPS_KEY: &str = "auth-extra-groups";
/// Data key that must be `"true"` for the token to authenticate.
pub const USAGE_AUTHENTICATION_KEY: &str = "usage-bootstrap-authentication";
/// Data key allowing the token to sign the cluster-info ConfigMap (not used by keyward).
pub const USAGE_SIGNING_KEY: &str = "usage-bootstrap-signing";
/// User name prefix: `system:bootstrap:<id>`.
pub const USER_PREFIX: &str = "system:bootstrap:";
/// The group of every bootstrap token.
pub const DEFAULT_GROUP: &str = "system:bootstrappers";
/// The token pattern (`BootstrapTokenPattern`).
pub const TOKEN_PATTERN: &str = r"\A([a-z0-9]{6})\.([a-z0-9]{16})\z";
/// The extra group pattern (`BootstrapGroupPattern`).
pub const GROUP_PATTERN: &str = r"\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\z";

const TOKEN_CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

fn token_chars(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Splits a bootstrap token into (id, secret) if it matches [`TOKEN_PATTERN`].
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    (token_chars(id, 6) && token_chars(secret, 16)).then_some((id, secret))
}

/// Whether `token` matches [`TOKEN_PATTERN`] (`IsValidBootstrapToken`).
pub fn is_valid_token(token: &str) -> bool {
    parse_token(token).is_some()
}

/// Whether `id` is a valid token id, `^([a-z0-9]{6})$` (`IsValidBootstrapTokenID`).
pub fn is_valid_token_id(id: &str) -> bool {
    token_chars(id, 6)
}

/// `bootstrap-token-<id>` (`BootstrapTokenSecretName`).
pub fn secret_name(id: &str) -> String {
    format!("{SECRET_NAME_PREFIX}{id}")
}

/// A new random token `<id>.<secret>` from the operating system's random generator, each
/// character uniform over `[0-9a-z]` (`GenerateBootstrapToken`).
pub fn generate_token() -> Result<String, CryptoError> {
    let mut out = String::with_capacity(23);
    let mut buf = [0u8; 64];
    for len in [6, 16] {
        if len == 16 {
            out.push('.');
        }
        let mut n = 0;
        while n < len {
            fill_random(&mut buf)?;
            // 256 = 7 * 36 + 4: bytes of 252 and above are dropped so every character is as
            // likely.
            for b in buf.iter().filter(|b| **b < 252) {
                if n == len {
                    break;
                }
                out.push(TOKEN_CHARS[usize::from(*b) % TOKEN_CHARS.len()] as char);
                n += 1;
            }
        }
    }
    Ok(out)
}

/// `ValidateBootstrapGroupName`: `name` must match [`GROUP_PATTERN`].
pub fn validate_group_name(name: &str) -> Result<(), String> {
    let ok = name
        .strip_prefix("system:bootstrappers:")
        .is_some_and(|body| {
            let b = body.as_bytes();
            (1..=256).contains(&b.len())
                && b.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b':' || *c == b'-'
                })
                && b.last()
                    .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bootstrap group {name:?} is invalid (must match {GROUP_PATTERN})"
        ))
    }
}

/// A data value as a string ("" if absent), as `GetData` reads it.
fn data<'a>(secret: &'a Secret, key: &str) -> &'a str {
    secret
        .data
        .get(key)
        .and_then(|v| std::str::from_utf8(v.as_slice()).ok())
        .unwrap_or("")
}

/// `GetGroups`: `system:bootstrappers` plus every validated `auth-extra-groups` entry,
/// de-duplicated and sorted.
pub fn get_groups(secret: &Secret) -> Result<Vec<String>, String> {
    let mut groups = std::collections::BTreeSet::from([DEFAULT_GROUP.to_owned()]);
    let extra = data(secret, EXTRA_GROUPS_KEY);
    if !extra.is_empty() {
        for g in extra.split(',') {
            validate_group_name(g)?;
            groups.insert(g.to_owned());
        }
    }
    Ok(groups.into_iter().collect())
}

/// `HasExpired`: an empty expiration never expires; an unparseable one counts as expired.
pub fn has_expired(secret: &Secret, now: SystemTime) -> bool {
    let expiration = data(secret, EXPIRATION_KEY);
    if expiration.is_empty() {
        return false;
    }
    match crate::go_time::system_time(expiration) {
        None => {
            tracing::debug!(namespace = %secret.metadata.namespace, name = %secret.metadata.name, "unparseable expiration time in bootstrap token Secret; treating as expired");
            true
        }
        Some(exp) if exp <= now => {
            tracing::debug!(namespace = %secret.metadata.namespace, name = %secret.metadata.name, expiration, "expired bootstrap token");
            true
        }
        Some(_) => false,
    }
}

/// The bootstrap token authenticator, reading Secrets in [`NAMESPACE`].
#[derive(Clone)]
pub struct BootstrapTokens {
    secrets: Arc<dyn SecretLookup>,
}

impl std::fmt::Debug for BootstrapTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapTokens")
    }
}

/// Logs why a Secret that matched a token's id did not authenticate (never the secret).
fn token_error(s: &Secret, why: &str) {
    tracing::debug!(
        "Bootstrap secret {}/{} matching bearer token {why}",
        s.metadata.namespace,
        s.metadata.name
    );
}

impl BootstrapTokens {
    /// Authenticates bootstrap tokens against the Secrets of `secrets`.
    pub fn new(secrets: Arc<dyn SecretLookup>) -> Self {
        Self { secrets }
    }

    /// [`TokenAuthenticator::authenticate_token`] with the time given (for tests).
    pub async fn authenticate_at(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Option<Identity>, AuthnError> {
        let Some((token_id, token_secret)) = parse_token(token) else {
            return Ok(None);
        };
        let name = secret_name(token_id);
        let Some(secret) = self.secrets.get_secret(NAMESPACE, &name).await? else {
            tracing::debug!("No secret of name {name} to match bootstrap bearer token");
            return Ok(None);
        };
        if secret.type_ != SECRET_TYPE || secret.data.is_empty() {
            token_error(
                &secret,
                &format!("has invalid type, expected {SECRET_TYPE}."),
            );
            return Ok(None);
        }
        let stored = secret
            .data
            .get(TOKEN_SECRET_KEY)
            .map(|v| v.as_slice())
            .unwrap_or_default();
        if !ct_eq(stored, token_secret.as_bytes()) {
            token_error(
                &secret,
                &format!("has invalid value for key {TOKEN_SECRET_KEY}."),
            );
            return Ok(None);
        }
        let id = data(&secret, TOKEN_ID_KEY);
        if id != token_id {
            token_error(
                &secret,
                &format!("has invalid value for key {TOKEN_ID_KEY}, expected {token_id}."),
            );
            return Ok(None);
        }
        if has_expired(&secret, now) {
            return Ok(None);
        }
        if data(&secret, USAGE_AUTHENTICATION_KEY) != "true" {
            token_error(
                &secret,
                &format!("not marked {USAGE_AUTHENTICATION_KEY}=true."),
            );
            return Ok(None);
        }
        let groups = match get_groups(&secret) {
            Ok(g) => g,
            Err(e) => {
                token_error(
                    &secret,
                    &format!("has invalid value for key {EXTRA_GROUPS_KEY}: {e}."),
                );
                return Ok(None);
            }
        };
        Ok(Some(
            Identity::new(format!("{USER_PREFIX}{id}"), "", groups).with_authenticated_group(),
        ))
    }
}

#[async_trait::async_trait]
impl TokenAuthenticator for BootstrapTokens {
    async fn authenticate_token(
        &self,
        token: &BearerToken,
    ) -> Result<Option<Identity>, AuthnError> {
        self.authenticate_at(token.expose(), SystemTime::now())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::names::SYSTEM_AUTHENTICATED;
    use crate::authn::testing::{secret, FailingSecrets, MapSecrets};
    use std::time::Duration;

    const TOKEN_ID: &str = "foobar";
    const TOKEN_SECRET: &str = "circumnavigation";

    fn bootstrap_secret(name: &str, data: &[(&str, &str)]) -> Secret {
        secret(NAMESPACE, name, SECRET_TYPE, data)
    }

    fn valid_data(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut d = vec![
            (TOKEN_ID_KEY, TOKEN_ID),
            (TOKEN_SECRET_KEY, TOKEN_SECRET),
            (USAGE_AUTHENTICATION_KEY, "true"),
        ];
        d.extend_from_slice(extra);
        d
    }

    /// Upstream `TestTokenAuthenticator`
    /// (plugin/pkg/auth/authenticator/token/bootstrap/bootstrap_test.go), every case.
    #[tokio::test]
    async fn upstream_token_authenticator() {
        let name = secret_name(TOKEN_ID);
        let full = format!("{TOKEN_ID}.{TOKEN_SECRET}");
        let want_user = |groups: &[&str]| {
            let mut g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
            g.push(SYSTEM_AUTHENTICATED.into());
            Some(Identity::new("system:bootstrap:foobar", "", g))
        };
        struct Case {
            name: &'static str,
            secrets: Vec<Secret>,
            token: String,
            want: Option<Identity>,
        }
        let cases = vec![
            Case {
                name: "valid token",
                secrets: vec![bootstrap_secret(&name, &valid_data(&[]))],
                token: full.clone(),
                want: want_user(&["system:bootstrappers"]),
            },
            Case {
                name: "valid token with extra group",
                secrets: vec![bootstrap_secret(
                    &name,
                    &valid_data(&[(EXTRA_GROUPS_KEY, "system:bootstrappers:foo")]),
                )],
                token: full.clone(),
                want: want_user(&["system:bootstrappers", "system:bootstrappers:foo"]),
            },
            Case {
                name: "invalid group",
                secrets: vec![bootstrap_secret(
                    &name,
                    &valid_data(&[(EXTRA_GROUPS_KEY, "foo")]),
                )],
                token: full.clone(),
                want: None,
            },
            Case {
                name: "invalid secret name",
                secrets: vec![bootstrap_secret("bad-name", &valid_data(&[]))],
                token: full.clone(),
                want: None,
            },
            Case {
                name: "no usage",
                secrets: vec![bootstrap_secret(
                    &name,
                    &[(TOKEN_ID_KEY, TOKEN_ID), (TOKEN_SECRET_KEY, TOKEN_SECRET)],
                )],
                token: full.clone(),
                want: None,
            },
            Case {
                name: "wrong token",
                secrets: vec![bootstrap_secret(&name, &valid_data(&[]))],
                token: format!("barfoo.{TOKEN_SECRET}"),
                want: None,
            },
            // Upstream sets a DeletionTimestamp; keyward has no graceful deletion, so a deleted
            // token's Secret is simply gone.
            Case {
                name: "deleted token",
                secrets: vec![],
                token: full.clone(),
                want: None,
            },
            Case {
                name: "expired token",
                secrets: vec![bootstrap_secret(
                    &name,
                    &valid_data(&[(EXPIRATION_KEY, "2009-11-10T23:00:00Z")]),
                )],
                token: full.clone(),
                want: None,
            },
            Case {
                name: "not expired token",
                secrets: vec![bootstrap_secret(
                    &name,
                    &valid_data(&[(EXPIRATION_KEY, "2109-11-10T23:00:00Z")]),
                )],
                token: full.clone(),
                want: want_user(&["system:bootstrappers"]),
            },
            Case {
                name: "token id wrong length",
                secrets: vec![bootstrap_secret(
                    &secret_name("foo"),
                    &[
                        (TOKEN_ID_KEY, "foo"),
                        (TOKEN_SECRET_KEY, TOKEN_SECRET),
                        (USAGE_AUTHENTICATION_KEY, "true"),
                    ],
                )],
                token: format!("foo.{TOKEN_SECRET}"),
                want: None,
            },
        ];
        for c in cases {
            let lookup = MapSecrets::default();
            for s in c.secrets {
                lookup.put(s);
            }
            let a = BootstrapTokens::new(Arc::new(lookup));
            let got = a
                .authenticate_token(&BearerToken::new(c.token))
                .await
                .unwrap_or_else(|e| panic!("{}: returned an error: {e}", c.name));
            assert_eq!(got, c.want, "{}", c.name);
        }
    }

    #[tokio::test]
    async fn more_rejections_and_lookup_errors() {
        let name = secret_name(TOKEN_ID);
        let full = format!("{TOKEN_ID}.{TOKEN_SECRET}");
        let check = |data: Vec<(&'static str, &'static str)>, type_: &'static str| {
            let full = full.clone();
            let name = name.clone();
            async move {
                let lookup = MapSecrets::default();
                lookup.put(secret(NAMESPACE, &name, type_, &data));
                BootstrapTokens::new(Arc::new(lookup))
                    .authenticate_token(&BearerToken::new(full))
                    .await
                    .unwrap()
            }
        };
        assert!(
            check(valid_data(&[]), "Opaque").await.is_none(),
            "wrong type"
        );
        assert!(check(vec![], SECRET_TYPE).await.is_none(), "no data");
        let mut wrong = valid_data(&[]);
        wrong[1] = (TOKEN_SECRET_KEY, "circumnavigatioX");
        assert!(check(wrong, SECRET_TYPE).await.is_none(), "wrong secret");
        let mut wrong = valid_data(&[]);
        wrong[0] = (TOKEN_ID_KEY, "barfoo");
        assert!(check(wrong, SECRET_TYPE).await.is_none(), "wrong token-id");
        let bad_exp = valid_data(&[(EXPIRATION_KEY, "tomorrow")]);
        assert!(check(bad_exp, SECRET_TYPE).await.is_none(), "unparseable");
        assert!(check(valid_data(&[]), SECRET_TYPE).await.is_some());
        let mut not_true = valid_data(&[]);
        not_true[2] = (USAGE_AUTHENTICATION_KEY, "True");
        assert!(
            check(not_true, SECRET_TYPE).await.is_none(),
            "not exactly true"
        );
        // Deduplicated and sorted.
        let groups = valid_data(&[(
            EXTRA_GROUPS_KEY,
            "system:bootstrappers:foo,system:bootstrappers:bar,system:bootstrappers:bar",
        )]);
        assert_eq!(
            check(groups, SECRET_TYPE).await.unwrap().groups,
            [
                "system:bootstrappers",
                "system:bootstrappers:bar",
                "system:bootstrappers:foo",
                SYSTEM_AUTHENTICATED
            ]
        );
        // A lookup failure is an error; a token of another form is not even looked up.
        let failing = BootstrapTokens::new(Arc::new(FailingSecrets));
        let e = failing
            .authenticate_token(&BearerToken::new(full.clone()))
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read Secret kube-system/bootstrap-token-foobar: backend unavailable"
        );
        assert!(!e.to_string().contains(TOKEN_SECRET));
        assert!(failing
            .authenticate_token(&BearerToken::new("not-a-bootstrap-token"))
            .await
            .unwrap()
            .is_none());
        // Expiry is compared with the time given.
        let lookup = MapSecrets::default();
        lookup.put(bootstrap_secret(
            &name,
            &valid_data(&[(EXPIRATION_KEY, "2030-01-01T00:00:00+01:00")]),
        ));
        let a = BootstrapTokens::new(Arc::new(lookup));
        let exp = crate::go_time::system_time("2029-12-31T23:00:00Z").unwrap();
        let before = exp - Duration::from_secs(1);
        assert!(a.authenticate_at(&full, before).await.unwrap().is_some());
        assert!(a.authenticate_at(&full, exp).await.unwrap().is_none());
    }

    /// Upstream `TestGetGroups` (cluster-bootstrap util/secrets).
    #[test]
    fn upstream_get_groups() {
        let with = |v: Option<&str>| {
            let data: Vec<(&str, &str)> =
                v.map(|v| vec![(EXTRA_GROUPS_KEY, v)]).unwrap_or_default();
            get_groups(&bootstrap_secret("x", &data))
        };
        assert_eq!(with(None).unwrap(), ["system:bootstrappers"], "not set");
        assert_eq!(with(Some("")).unwrap(), ["system:bootstrappers"], "empty");
        assert_eq!(
            with(Some("foo")).unwrap_err(),
            r#"bootstrap group "foo" is invalid (must match \Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\z)"#,
            "invalid prefix"
        );
        assert_eq!(
            with(Some(
                "system:bootstrappers:foo,system:bootstrappers:bar,system:bootstrappers:bar"
            ))
            .unwrap(),
            [
                "system:bootstrappers",
                "system:bootstrappers:bar",
                "system:bootstrappers:foo"
            ],
            "valid"
        );
    }

    /// Upstream `TestValidateBootstrapGroupName` (cluster-bootstrap token/util).
    #[test]
    fn upstream_validate_bootstrap_group_name() {
        let long = format!("system:bootstrappers:{}", "x".repeat(300));
        let cases: &[(&str, &str, bool)] = &[
            ("valid", "system:bootstrappers:foo", true),
            ("valid nested", "system:bootstrappers:foo:bar:baz", true),
            (
                "valid with dashes and number",
                "system:bootstrappers:foo-bar-42",
                true,
            ),
            ("invalid uppercase", "system:bootstrappers:Foo", false),
            ("missing prefix", "foo", false),
            ("prefix with no body", "system:bootstrappers:", false),
            ("invalid spaces", "system:bootstrappers: ", false),
            ("invalid asterisk", "system:bootstrappers:*", false),
            ("trailing colon", "system:bootstrappers:foo:", false),
            ("trailing dash", "system:bootstrappers:foo-", false),
            (
                "script tags",
                "system:bootstrappers:<script> alert(\"scary?!\") </script>",
                false,
            ),
            ("too long", &long, false),
        ];
        for (name, input, valid) in cases {
            assert_eq!(validate_group_name(input).is_ok(), *valid, "{name}");
        }
        let max = format!("system:bootstrappers:{}", "x".repeat(256));
        assert!(validate_group_name(&max).is_ok(), "256 characters of body");
    }

    /// Upstream `TestIsValidBootstrapToken`, `TestIsValidBootstrapTokenID`,
    /// `TestBootstrapTokenSecretName` and `TestGenerateBootstrapToken`.
    #[test]
    fn upstream_token_format() {
        let cases: &[(&str, bool)] = &[
            ("", false),
            (".", false),
            ("1234567890123456789012", false),
            ("12345.1234567890123456", false),
            (".1234567890123456", false),
            ("123456.", false),
            ("123456:1234567890.123456", false),
            ("abcdef:1234567890123456", false),
            ("Abcdef.1234567890123456", false),
            ("123456.AABBCCDDEEFFGGHH", false),
            ("123456.AABBCCD-EEFFGGHH", false),
            ("abc*ef.1234567890123456", false),
            ("abcdef.1234567890123456", true),
            ("123456.aabbccddeeffgghh", true),
            ("ABCDEF.abcdef0123456789", false),
            ("abcdef.abcdef0123456789", true),
            ("123456.1234560123456789", true),
        ];
        for (token, want) in cases {
            assert_eq!(is_valid_token(token), *want, "{token:?}");
        }
        let ids: &[(&str, bool)] = &[
            ("", false),
            ("1234567890123456789012", false),
            ("12345", false),
            ("Abcdef", false),
            ("ABCDEF", false),
            ("abcdef.", false),
            ("abcdef", true),
            ("123456", true),
        ];
        for (id, want) in ids {
            assert_eq!(is_valid_token_id(id), *want, "{id:?}");
        }
        for (id, want) in [
            ("foo", "bootstrap-token-foo"),
            ("bar", "bootstrap-token-bar"),
            ("", "bootstrap-token-"),
            ("abcdef", "bootstrap-token-abcdef"),
        ] {
            assert_eq!(secret_name(id), want);
        }
        let t = generate_token().unwrap();
        assert!(is_valid_token(&t), "{t}");
        assert_ne!(generate_token().unwrap(), t);
    }
}
