//! Secret manifests: the files people keep Secrets in, turned into the store's [`Secret`]s
//! and back.
//!
//! - [`codec`]: YAML (multi-document) or JSON, single objects or `kind: List`, `data` and
//!   `stringData`, read as kubectl reads them and printed as `kubectl get -o yaml|json` prints
//!   them.
//! - [`files`]: manifest files and directories in kubectl's order, the namespace rules of
//!   `apply -n`, and the validation every manifest passes before anything is written.
//! - [`goyaml`] and [`gojson`]: YAML and JSON written byte for byte as kubectl (Go's
//!   encoders) writes them.
//! - [`last_applied`]: kubectl's client-side apply (last-applied annotation, three-way merge).
//! - [`kustomize`]: a kustomization's resources and secretGenerator, with kustomize's (v5)
//!   generator semantics and name-suffix hash.
//!
//! Nothing here talks to a server or prints. Every failure is a [`ManifestError`] naming the
//! input (file, document, field) and what is allowed there.

use std::path::PathBuf;

use crate::store::model::FieldError;
use crate::store::Secret;

pub mod codec;
pub mod files;
pub mod gojson;
pub mod goyaml;
pub mod kustomize;
pub mod last_applied;
pub mod yaml_keys;

pub use codec::{
    list_json, list_of, list_value, list_yaml, object_value, parse, parse_objects, secret_json,
    to_json, to_yaml,
};
pub use files::{read_manifests, resolve_namespaces, same_content, validate};

/// Deepest nesting of flow collections (`[`, `{`) a YAML text may have, counted over its bytes
/// (brackets in strings too, so a document within it may be refused, never one beyond it).
/// Values nest at most 128 deep anyway (the parser's recursion limit), but libyaml's scanner
/// looks at every open bracket before it gives that error, in time quadratic in their number:
/// 100,000 took 33 s of CPU, 50,000 in a manifest 17 s.
pub const MAX_YAML_FLOW_DEPTH: usize = 1000;

/// Where `text` first nests flow collections deeper than [`MAX_YAML_FLOW_DEPTH`] (a byte
/// offset), if it does: such a text is refused before it is parsed.
pub fn too_deep(text: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    for (at, b) in text.iter().enumerate() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_YAML_FLOW_DEPTH {
                    return Some(at);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// A Secret read from a manifest, with where it came from (for messages).
#[derive(Debug)]
pub struct SourcedSecret {
    /// The Secret as the manifest describes it.
    pub secret: Secret,
    /// The input it came from: a file name, `STDIN`, or the kustomization and generator.
    pub source: String,
    /// The manifest object as written, when it was read from a file or stdin (kubectl apply
    /// records it); `None` for a generated Secret.
    pub manifest: Option<serde_json::Value>,
}

impl SourcedSecret {
    /// A Secret that was not read from a manifest (generated, or built in a test).
    pub fn new(secret: Secret, source: impl Into<String>) -> Self {
        SourcedSecret {
            secret,
            source: source.into(),
            manifest: None,
        }
    }
}

/// Why a manifest or kustomization was refused. `input` names the file (or `STDIN`) as it
/// was given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// A document is not valid YAML or JSON (the author's mistake).
    #[error("error parsing {input} (document {document}): {detail}")]
    Syntax {
        /// The input.
        input: String,
        /// The document's number in the input, from 1.
        document: usize,
        /// What the parser said.
        detail: String,
    },
    /// A document is a scalar or a list instead of an object (the author's mistake).
    #[error("error parsing {input}: a manifest must be an object")]
    NotAnObject {
        /// The input.
        input: String,
    },
    /// A file is not UTF-8 text (the author's mistake).
    #[error("error parsing {input}: not UTF-8 text")]
    NotUtf8 {
        /// The input.
        input: String,
    },
    /// An object has no `kind` (the author's mistake).
    #[error("error validating {input}: kind not set")]
    KindNotSet {
        /// The input.
        input: String,
    },
    /// An object is not a Secret or a List of them (the author's mistake).
    #[error("error validating {input}: kind {kind:?} is not supported; keyward stores kind Secret (or a List of them)")]
    UnsupportedKind {
        /// The input.
        input: String,
        /// The kind found.
        kind: String,
    },
    /// A Secret's `apiVersion` is not `v1` (the author's mistake).
    #[error("error validating {input}: apiVersion must be \"v1\" for kind Secret")]
    ApiVersion {
        /// The input.
        input: String,
    },
    /// A Secret has a field the Secret type does not have (the author's mistake).
    #[error("error validating {input}: secret {name:?}: unknown field {field:?}")]
    UnknownField {
        /// The input.
        input: String,
        /// The Secret's name.
        name: String,
        /// The field, e.g. `spec` or `metadata.finalizers`.
        field: String,
    },
    /// A Secret's fields have the wrong types, or a `data` value is not base64 (the author's
    /// mistake).
    #[error("error decoding secret {name:?} in {input}: {detail}")]
    Decode {
        /// The input.
        input: String,
        /// The Secret's name.
        name: String,
        /// What the decoder said.
        detail: String,
    },
    /// A Secret breaks a rule of the Secret type (the author's mistake).
    #[error("error validating {input}: Secret {name:?} is invalid: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The input.
        input: String,
        /// The Secret's name.
        name: String,
        /// Each field and what is allowed there.
        errors: Vec<FieldError>,
    },
    /// A manifest names another namespace than the one requested (the caller's mistake).
    #[error("the namespace from the provided object {object:?} does not match the namespace {requested:?}")]
    NamespaceMismatch {
        /// The manifest's namespace.
        object: String,
        /// The namespace requested.
        requested: String,
    },
    /// A manifest path does not exist (the caller's mistake).
    #[error("the path {:?} does not exist", .path.display().to_string())]
    NoSuchPath {
        /// The path as given.
        path: PathBuf,
    },
    /// A directory of manifests cannot be listed (the environment).
    #[error("cannot read directory {}: {source}", .dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file cannot be read (the environment).
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A kustomization directory is not a directory (the caller's mistake).
    #[error("{}: must be a directory holding a kustomization.yaml", .dir.display())]
    NotKustomizeDir {
        /// The directory as given.
        dir: PathBuf,
    },
    /// A kustomization directory cannot be resolved (the environment).
    #[error("{}: {source}", .dir.display())]
    KustomizeDir {
        /// The directory as given.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A directory holds no kustomization file (the caller's mistake).
    #[error("unable to find one of 'kustomization.yaml', 'kustomization.yml' or 'Kustomization' in directory '{}'", .dir.display())]
    NoKustomization {
        /// The directory.
        dir: PathBuf,
    },
    /// A directory holds more than one kustomization file (the author's mistake).
    #[error("found multiple kustomization files under: {}", .dir.display())]
    SeveralKustomizations {
        /// The directory.
        dir: PathBuf,
    },
    /// A kustomization breaks a rule, or names what keyward does not support (the author's
    /// mistake, or a file it names cannot be read).
    #[error("kustomization {file}: {}{problem}", if .field.is_empty() { String::new() } else { format!("{}: ", .field) })]
    Kustomization {
        /// The kustomization file.
        file: String,
        /// Where in it, e.g. `secretGenerator[0] (secret "db").literals`; empty for the whole
        /// file.
        field: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
}
