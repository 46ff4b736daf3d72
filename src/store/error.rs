//! The store's errors, and the preconditions whose failure is one of them.

use crate::backend::{BackendError, Revision};
use crate::encryption::EncryptionError;
use crate::names::{Namespace, SecretName};

use super::{FieldError, Secret};

/// Errors of this layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object or request breaks a rule (caller's input); each error names its field.
    #[error("Secret {name:?} is invalid: {}", .errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// Object name.
        name: String,
        /// The rules broken.
        errors: Vec<FieldError>,
    },
    /// No such Secret (caller's input).
    #[error("secrets {name:?} not found")]
    NotFound {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Create of a Secret that exists (caller's input).
    #[error("secrets {name:?} already exists")]
    AlreadyExists {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A resourceVersion or uid precondition failed (caller: re-read and retry).
    #[error("Operation cannot be fulfilled on secrets {name:?}: {reason}")]
    Conflict {
        /// Name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A delete's precondition does not hold for the stored Secret `name` (caller: re-read).
    /// kube-apiserver checks them before it deletes, naming the Kind (`Secret`), not the
    /// resource.
    #[error("Operation cannot be fulfilled on Secret {name:?}: {reason}")]
    PreconditionFailed {
        /// Name.
        name: String,
        /// Which precondition, with both values.
        reason: String,
    },
    /// A continue token's revision was compacted away (caller: list again, or go on with
    /// `continue_token`, which continues at the current revision from the same key).
    #[error("{INCONSISTENT_CONTINUE}")]
    ContinueExpired {
        /// The token that continues at the current revision.
        continue_token: String,
    },
    /// The requested revision or continue token is older than retained history (caller:
    /// relist).
    #[error("too old resource version: {0}")]
    Gone(String),
    /// Encryption or decryption failed (configuration, KMS plugin, or stored data).
    #[error(transparent)]
    Encryption(#[from] EncryptionError),
    /// The backend failed (environment).
    #[error(transparent)]
    Backend(BackendError),
    /// A delete met a value that cannot be decrypted (stored data: key lost or removed from
    /// the configuration).
    #[error("secrets {name:?} cannot be decrypted ({reason}); to delete it anyway, retry with unsafe_ignore_decrypt_errors (keyward delete --unsafe-ignore-decrypt-errors)")]
    Undecryptable {
        /// Name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The server could not fill a Secret's generated fields on create, e.g. sign a service
    /// account token (environment).
    #[error("cannot fill Secret {name:?} on create: {reason}")]
    CreateHook {
        /// Name.
        name: String,
        /// Why (never a value).
        reason: String,
    },
    /// A raw read named a key outside the store's Secrets (caller's input).
    #[error("{field}: {key:?} is outside this store; raw reads are limited to keys under {scope}")]
    OutsideStore {
        /// The request field: `key` or `prefix`.
        field: &'static str,
        /// The key or prefix asked for.
        key: String,
        /// The keys raw reads may name (`<prefix>/secrets/`).
        scope: String,
    },
    /// A continue token that this list did not hand out (caller's input).
    #[error("continue: Invalid value: the continue token is not valid for this list")]
    BadContinue {
        /// What is wrong with it, in kube-apiserver's words (`continue key is not valid...`).
        why: String,
    },
    /// A migration is already running; one runs at a time (caller's timing).
    #[error("a migration is already running; wait for it to finish (keyward encryption status shows what is left)")]
    MigrationRunning,
    /// A migration stopped because its caller went away (what it rewrote stays rewritten).
    #[error("the migration stopped: its caller went away; run keyward migrate again to finish")]
    MigrationStopped,
    /// A stored object does not decode (a bug or foreign data).
    #[error("stored object {key} is not a valid Secret: {reason}")]
    Corrupt {
        /// Storage key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A read that must see every Secret in range met some it cannot decrypt or decode (stored
    /// data: a key lost or removed from the configuration): a Kubernetes list, a watch's
    /// initial list, a deletecollection, which kube-apiserver fails as a whole.
    #[error("failed to read one or more secrets from the storage: {}", unreadable_summary(.errors))]
    Unreadable {
        /// Each Secret that could not be read: storage key, and why.
        errors: Vec<(String, String)>,
    },
}

fn unreadable_summary(errors: &[(String, String)]) -> String {
    match errors {
        [(key, why)] => format!("{key}: {why}"),
        [(key, why), more @ ..] => format!("{key}: {why} (and {} more)", more.len()),
        [] => "none".to_owned(),
    }
}

impl From<BackendError> for StoreError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Compacted {
                requested,
                compacted,
                // kube-apiserver's words (its watch cache): the revision asked for, then the
                // newest one already gone.
            } => StoreError::Gone(format!("{requested} ({})", compacted.get() - 1)),
            other => StoreError::Backend(other),
        }
    }
}

impl StoreError {
    /// Whether this is a write that lost the optimistic lock ([`MODIFIED`]): done again on the
    /// current version, it may apply. Failed uid or resourceVersion preconditions are not.
    pub fn is_modified(&self) -> bool {
        matches!(self, StoreError::Conflict { reason, .. } if reason == MODIFIED)
    }

    /// [`StoreError::Invalid`]: the request about Secret `name` breaks `errors` (in the order
    /// kube-apiserver reports them).
    pub fn invalid(name: &str, errors: Vec<FieldError>) -> StoreError {
        StoreError::Invalid {
            name: name.to_owned(),
            errors,
        }
    }
}

pub(super) fn field_invalid(name: &str, field: &str, message: impl Into<String>) -> StoreError {
    StoreError::invalid(name, vec![FieldError::new(field, message)])
}

/// Preconditions for a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// The stored uid must equal this, if set.
    pub uid: Option<String>,
    /// The stored resourceVersion must equal this, if set.
    pub resource_version: Option<Revision>,
    /// Delete even if the stored value cannot be decrypted (its preconditions cannot be
    /// checked then). KEP-3926's escape hatch for data whose key is lost.
    pub unsafe_ignore_decrypt_errors: bool,
}

impl Preconditions {
    /// Whether Secret `name`, stored with `uid` at `resource_version`, meets these
    /// preconditions: the Conflict kube-apiserver answers if not.
    pub fn check(
        &self,
        name: &str,
        uid: &str,
        resource_version: Revision,
    ) -> Result<(), StoreError> {
        // kube-apiserver's early check (`rest.BeforeDelete`), whose words a client sees.
        let failed = |reason: String| {
            Err(StoreError::PreconditionFailed {
                name: name.to_string(),
                reason,
            })
        };
        if let Some(want) = self.uid.as_ref().filter(|want| *want != uid) {
            return failed(format!(
                "the UID in the precondition ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
            ));
        }
        if let Some(want) = self
            .resource_version
            .filter(|want| *want != resource_version)
        {
            return failed(format!(
                "the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({resource_version}). The object might have been modified"
            ));
        }
        Ok(())
    }

    /// [`check`](Self::check) against a Secret as the store returned it.
    pub fn check_secret(&self, s: &Secret) -> Result<(), StoreError> {
        let rv = s.metadata.resource_version.parse().map_err(|_| {
            StoreError::Backend(BackendError::Corrupt(format!(
                "Secret {}/{} was read with resourceVersion {:?}",
                s.metadata.namespace, s.metadata.name, s.metadata.resource_version
            )))
        })?;
        self.check(&s.metadata.name, &s.metadata.uid, rv)
    }
}

/// kube-apiserver's message for a continue token whose revision was compacted (its etcd
/// storage's `inconsistentContinue`).
const INCONSISTENT_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

pub(super) fn not_found(namespace: &Namespace, name: &SecretName) -> StoreError {
    StoreError::NotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// The reason of a [`StoreError::Conflict`] whose write lost the optimistic lock: the object
/// changed since the version it was based on (kube-apiserver's `OptimisticLockErrorMsg`).
pub const MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

pub(super) fn conflict(name: &str) -> StoreError {
    StoreError::Conflict {
        name: name.to_owned(),
        reason: MODIFIED.into(),
    }
}
