//! Where `keyward create secret` takes a Secret's data from, read as kubectl reads it:
//! literals, files and directories (`--from-file`), env files (`--from-env-file`), a TLS pair,
//! a registry's credentials.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

use super::CliError;
use crate::names::{self, DataKey};
use crate::store::model::SecretBytes;
use crate::store::Secret;

pub(super) fn bytes(v: &[u8]) -> SecretBytes {
    SecretBytes::new(v.to_vec())
}

pub(super) fn read_file(path: &Path, flag: &str) -> Result<Zeroizing<Vec<u8>>, CliError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| CliError::plain(format!("error: {flag}: {}: {e}", path.display())))
}

/// A key given through `flag`, as a data key.
pub(super) fn data_key(k: &str, flag: &str) -> Result<DataKey, CliError> {
    DataKey::try_from(k).map_err(|e| CliError::plain(format!("error: {flag}: {e}")))
}

/// Adds `key` to `data`, refusing a key given twice (kubectl's words).
pub(super) fn add_key(
    data: &mut BTreeMap<String, SecretBytes>,
    key: DataKey,
    value: SecretBytes,
) -> Result<(), CliError> {
    match data.entry(key.into_string()) {
        std::collections::btree_map::Entry::Occupied(e) => Err(CliError::new(format!(
            "cannot add key {}, another key by that name already exists",
            e.key()
        ))),
        std::collections::btree_map::Entry::Vacant(e) => {
            e.insert(value);
            Ok(())
        }
    }
}

/// Reads an env file like kubectl: `KEY=VALUE` lines, `#` comments and blank lines skipped,
/// a line without `=` is an error.
/// The keys of an env file, read as kubectl reads one (its `processEnvFileLine`): a UTF-8
/// byte order mark before the first line and leading white space dropped, blank and `#` lines
/// skipped, keys held to the environment variable name rule, and a line with no `=` taking its
/// value from keyward's own environment (empty if unset).
pub(super) fn env_file(
    path: &Path,
    data: &mut BTreeMap<String, SecretBytes>,
) -> Result<(), CliError> {
    let raw = read_file(path, "--from-env-file")?;
    let text = std::str::from_utf8(&raw).map_err(|_| {
        CliError::plain(format!(
            "error: --from-env-file: {} is not UTF-8",
            path.display()
        ))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = match line.split_once('=') {
            Some((k, v)) => (k, v.to_owned()),
            None => (line, std::env::var(line).unwrap_or_default()),
        };
        let errors = crate::projection::env_name_errors(k);
        if !errors.is_empty() {
            return Err(CliError::plain(format!(
                "error: {k:?} is not a valid key name: {}",
                errors.join(";")
            )));
        }
        add_key(data, data_key(k, "--from-env-file")?, bytes(v.as_bytes()))?;
    }
    Ok(())
}

pub(super) fn add_from_file(
    spec: &str,
    data: &mut BTreeMap<String, SecretBytes>,
) -> Result<(), CliError> {
    // kubectl's `ParseFileSource`, its rules and words.
    let refuse = |m: String| Err(CliError::new(format!("--from-file: {m}")));
    let (key, path) = match spec.split_once('=') {
        None => (None, Path::new(spec)),
        Some((_, p)) if p.contains('=') => {
            return refuse("key names or file paths cannot contain '='".into())
        }
        Some(("", p)) => return refuse(format!("key name for file path {p} missing")),
        Some((k, "")) => return refuse(format!("file path for key name {k} missing")),
        Some((k, p)) => (Some(k), Path::new(p)),
    };
    let meta = std::fs::metadata(path)
        .map_err(|e| CliError::plain(format!("error: --from-file: {}: {e}", path.display())))?;
    if meta.is_dir() {
        if key.is_some() {
            return Err(CliError::plain(format!(
                "error: --from-file: cannot give a key name for a directory ({})",
                path.display()
            )));
        }
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .map_err(|e| CliError::plain(format!("error: --from-file: {}: {e}", path.display())))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            // Like kubectl (its ReadDir does not follow links): regular files only;
            // subdirectories, symbolic links (which could pull in a file from anywhere) and
            // devices are skipped.
            if !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let name = data_key(&e.file_name().to_string_lossy(), "--from-file")?;
            add_key(
                data,
                name,
                SecretBytes(read_file(&e.path(), "--from-file")?),
            )?;
        }
        return Ok(());
    }
    let key = match key {
        Some(k) => k.to_owned(),
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                CliError::plain(format!("error: --from-file: {spec:?} names no file"))
            })?,
    };
    let key = data_key(&key, "--from-file")?;
    add_key(data, key, SecretBytes(read_file(path, "--from-file")?))
}

pub(super) fn new_secret(
    name: &str,
    ns: &names::Namespace,
    type_: &str,
    immutable: bool,
) -> Secret {
    let mut s = Secret::default();
    s.metadata.name = name.to_owned();
    s.metadata.namespace = ns.to_string();
    s.type_ = type_.to_owned();
    if immutable {
        s.immutable = Some(true);
    }
    s
}

/// The `.dockerconfigjson` kubectl writes: `{"auths":{SERVER:{username,password,email,auth}}}`
/// with `auth` = base64(user:password).
pub(super) fn docker_config_json(
    server: &str,
    user: &str,
    password: &str,
    email: Option<&str>,
) -> Zeroizing<Vec<u8>> {
    let mut entry = serde_json::Map::new();
    entry.insert("username".into(), user.into());
    entry.insert("password".into(), password.into());
    if let Some(e) = email {
        entry.insert("email".into(), e.into());
    }
    entry.insert(
        "auth".into(),
        B64.encode(format!("{user}:{password}")).into(),
    );
    let v = serde_json::json!({ "auths": { server: entry } });
    Zeroizing::new(serde_json::to_vec(&v).unwrap_or_default())
}

pub(super) fn pem_blocks(
    data: &[u8],
    what: &str,
    path: &Path,
) -> Result<Vec<(String, Vec<u8>)>, CliError> {
    let text = std::str::from_utf8(data).map_err(|_| {
        CliError::plain(format!(
            "error: --{what} {}: not PEM (not text)",
            path.display()
        ))
    })?;
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let mut b64 = String::new();
        let end = format!("-----END {label}-----");
        let mut closed = false;
        for l in lines.by_ref() {
            if l.trim() == end {
                closed = true;
                break;
            }
            b64.push_str(l.trim());
        }
        let der = B64.decode(&b64).ok().filter(|_| closed).ok_or_else(|| {
            CliError::plain(format!(
                "error: --{what} {}: malformed PEM block {label}",
                path.display()
            ))
        })?;
        out.push((label.to_owned(), der));
    }
    if out.is_empty() {
        return Err(CliError::plain(format!(
            "error: --{what} {}: no PEM block found",
            path.display()
        )));
    }
    Ok(out)
}

/// Checks that `cert` and `key` are PEM and that the key belongs to the certificate (by
/// building a rustls signing key and comparing public keys).
pub(super) fn check_tls_pair(
    cert: &[u8],
    key: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), CliError> {
    let certs = pem_blocks(cert, "cert", cert_path)?;
    if !certs.iter().any(|(l, _)| l == "CERTIFICATE") {
        return Err(CliError::plain(format!(
            "error: --cert {}: no CERTIFICATE block",
            cert_path.display()
        )));
    }
    let keys = pem_blocks(key, "key", key_path)?;
    let (label, der) = keys
        .iter()
        .find(|(l, _)| l.ends_with("PRIVATE KEY"))
        .ok_or_else(|| {
            CliError::plain(format!(
                "error: --key {}: no PRIVATE KEY block",
                key_path.display()
            ))
        })?;
    let key_der = match label.as_str() {
        "PRIVATE KEY" => rustls_pki_types::PrivateKeyDer::Pkcs8(der.clone().into()),
        "RSA PRIVATE KEY" => rustls_pki_types::PrivateKeyDer::Pkcs1(der.clone().into()),
        "EC PRIVATE KEY" => rustls_pki_types::PrivateKeyDer::Sec1(der.clone().into()),
        other => {
            return Err(CliError::plain(format!(
                "error: --key {}: unsupported key type {other}",
                key_path.display()
            )))
        }
    };
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| CliError::plain(format!("error: --key {}: {e}", key_path.display())))?;
    let cert_der = rustls_pki_types::CertificateDer::from(certs[0].1.clone());
    let certified = rustls::sign::CertifiedKey::new(vec![cert_der], signing);
    certified.keys_match().map_err(|_| {
        CliError::plain(format!(
            "error: tls: private key does not match public key (--cert {}, --key {})",
            cert_path.display(),
            key_path.display()
        ))
    })
}
