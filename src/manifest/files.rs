//! Manifests as `kubectl apply -f` finds them (a file, or a directory's `*.yaml`, `*.yml` and
//! `*.json` files in name order, subdirectories when recursive), the namespace each Secret
//! lands in, and the checks every Secret passes before anything is written.

use std::path::{Path, PathBuf};

use super::{codec, ManifestError, SourcedSecret};
use crate::names::Namespace;
use crate::store::model::{normalize, validate as validate_secret};
use crate::store::Secret;

fn is_manifest_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The manifest files of a directory in kubectl's order: entries sorted by name, files with a
/// manifest extension, subdirectories walked in place when `recursive`.
fn dir_files(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let cannot = |source| ManifestError::ReadDir {
        dir: dir.to_owned(),
        source,
    };
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(cannot)? {
        entries.push(e.map_err(cannot)?);
    }
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir {
            if recursive {
                dir_files(&path, true, out)?;
            }
        } else if is_manifest_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The UTF-8 text of a file.
pub(super) fn read_text(path: &Path) -> Result<String, ManifestError> {
    let raw = std::fs::read(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(raw).map_err(|_| ManifestError::NotUtf8 {
        input: path.display().to_string(),
    })
}

/// Reads and parses the manifests at `path`: a file, or a directory's manifest files (and its
/// subdirectories' when `recursive`). Every file is read before any is parsed.
pub fn read_manifests(path: &Path, recursive: bool) -> Result<Vec<SourcedSecret>, ManifestError> {
    let meta = std::fs::metadata(path).map_err(|_| ManifestError::NoSuchPath {
        path: path.to_owned(),
    })?;
    let mut sources: Vec<(String, String)> = Vec::new();
    if meta.is_dir() {
        let mut files = Vec::new();
        dir_files(path, recursive, &mut files)?;
        for f in files {
            sources.push((f.display().to_string(), read_text(&f)?));
        }
    } else {
        sources.push((path.display().to_string(), read_text(path)?));
    }
    let mut out = Vec::new();
    for (source, text) in sources {
        for (secret, manifest) in codec::parse_objects(&text, &source)? {
            out.push(SourcedSecret {
                secret,
                source: source.clone(),
                manifest: Some(manifest),
            });
        }
    }
    Ok(out)
}

/// Sets each Secret's namespace: its manifest's, else `requested`, else `default`. A manifest
/// namespace that differs from a requested one is an error (as kubectl's).
pub fn resolve_namespaces(
    items: &mut [SourcedSecret],
    requested: Option<&Namespace>,
) -> Result<(), ManifestError> {
    for it in items.iter_mut() {
        let ns = &mut it.secret.metadata.namespace;
        match requested {
            Some(r) if !ns.is_empty() && ns != r.as_str() => {
                return Err(ManifestError::NamespaceMismatch {
                    object: ns.clone(),
                    requested: r.to_string(),
                })
            }
            Some(r) => *ns = r.to_string(),
            None if ns.is_empty() => *ns = Namespace::default().into_string(),
            None => {}
        }
    }
    Ok(())
}

/// Normalizes each Secret (merges `stringData` into `data`, sets defaults) and checks it
/// against the Secret type's rules, as the server will.
pub fn validate(items: &mut [SourcedSecret]) -> Result<(), ManifestError> {
    for it in items {
        normalize(&mut it.secret);
        if let Err(errors) = validate_secret(&it.secret) {
            return Err(ManifestError::Invalid {
                input: it.source.clone(),
                name: it.secret.metadata.name.clone(),
                errors,
            });
        }
    }
    Ok(())
}

/// Whether a stored Secret already has the desired content: the same data, type,
/// immutability, labels and annotations (both normalized).
pub fn same_content(desired: &Secret, stored: &Secret) -> bool {
    desired.data == stored.data
        && desired.type_ == stored.type_
        && desired.is_immutable() == stored.is_immutable()
        && desired.metadata.labels == stored.metadata.labels
        && desired.metadata.annotations == stored.metadata.annotations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::SecretBytes;

    fn item(ns: &str) -> SourcedSecret {
        let mut s = Secret::default();
        s.metadata.name = "a".into();
        s.metadata.namespace = ns.into();
        SourcedSecret::new(s, "m")
    }

    #[test]
    fn namespace_rules() {
        let mut v = vec![item(""), item("x")];
        resolve_namespaces(&mut v, None).unwrap();
        assert_eq!(
            (
                v[0].secret.metadata.namespace.as_str(),
                v[1].secret.metadata.namespace.as_str()
            ),
            ("default", "x")
        );
        let mut v = [item(""), item("x")];
        let y = Namespace::try_from("y").unwrap();
        resolve_namespaces(&mut v[..1], Some(&y)).unwrap();
        assert_eq!(v[0].secret.metadata.namespace, "y");
        let e = resolve_namespaces(&mut v[1..], Some(&y)).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"x\" does not match the namespace \"y\""),
            "{e}"
        );
    }

    #[test]
    fn directories_in_name_order_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let doc = |n: &str| format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {n}}}\n");
        std::fs::write(dir.path().join("b.yaml"), doc("b")).unwrap();
        std::fs::write(dir.path().join("a.json"), doc("a")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.yml"), doc("c")).unwrap();
        let names = |recursive| {
            read_manifests(dir.path(), recursive)
                .unwrap()
                .into_iter()
                .map(|s| s.secret.metadata.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(false), ["a", "b"]);
        assert_eq!(names(true), ["a", "b", "c"]);
        let missing = dir.path().join("nope.yaml");
        assert_eq!(
            read_manifests(&missing, false).unwrap_err().to_string(),
            format!(
                "the path {:?} does not exist",
                missing.display().to_string()
            )
        );
        std::fs::write(dir.path().join("bad.yaml"), b"\xff").unwrap();
        let e = read_manifests(dir.path(), false).unwrap_err().to_string();
        assert!(e.ends_with("bad.yaml: not UTF-8 text"), "{e}");
    }

    #[test]
    fn validation_names_the_input_and_content_compares_normalized() {
        let mut v = [item("default")];
        v[0].secret.metadata.name = "Bad_Name".into();
        let e = validate(&mut v).unwrap_err().to_string();
        assert!(
            e.starts_with("error validating m: Secret \"Bad_Name\" is invalid: metadata.name"),
            "{e}"
        );
        let mut a = [item("default")];
        a[0].secret
            .data
            .insert("k".into(), SecretBytes::new(b"v".to_vec()));
        validate(&mut a).unwrap();
        let mut b = a[0].secret.clone();
        assert!(same_content(&a[0].secret, &b));
        b.metadata.resource_version = "7".into();
        assert!(same_content(&a[0].secret, &b), "metadata other than labels");
        b.metadata.labels.insert("l".into(), "v".into());
        assert!(!same_content(&a[0].secret, &b));
    }
}
