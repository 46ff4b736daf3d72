//! The RBAC policy in force: [`Policy`], loaded from `--authorization-policy FILE|DIR`, and
//! reloaded when the files change.
//!
//! A FILE is read whatever its name; a DIR contributes its `*.yaml`, `*.yml` and `*.json`
//! files in name order, not its subdirectories (so a Kubernetes ConfigMap mounted as a volume,
//! with its `..data` directory and symlinked files, reads as its keys). Every file is read and
//! every object validated before any of it is used: the policy is all the files or none.
//!
//! [`Policy::watch`] starts a [`PolicyWatcher`], a tokio task that reads the files every
//! interval ([`DEFAULT_RELOAD_INTERVAL`]) and, when their content changed, loads them and swaps
//! the new policy in atomically; requests in flight finish with the old one. A change that
//! cannot be read or is invalid keeps the policy in force, is logged once at `error` (naming
//! file, document, object and field) and stays in [`Policy::status`] until a good policy is in
//! force again. Dropping the watcher stops it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::rbac::{parse_policy, PolicyCounts, Rbac};
use super::review::SubjectRulesReviewStatus;
use super::{Attributes, Authorizer, AuthzError, Decision, RuleResolver};
use crate::authn::Identity;

/// How often a [`PolicyWatcher`] reads the policy files by default.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// What the policy in force is and how reloading goes, for health checks and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// The file or directory the policy is read from (`None` for a policy built in code).
    pub source: Option<PathBuf>,
    /// `sha256:<hex>` of the files in force (names and contents), "" for a policy built in code.
    pub hash: String,
    /// When the policy in force was loaded.
    pub loaded_at: SystemTime,
    /// Objects in the policy in force.
    pub counts: PolicyCounts,
    /// Warnings about the policy in force (e.g. bindings to roles it does not define).
    pub warnings: Vec<String>,
    /// Reads of the files so far (including the first load).
    pub checks: u64,
    /// Times a changed policy was put in force.
    pub reloads: u64,
    /// Why the files on disk are not in force, while they are not: unreadable or invalid.
    pub last_error: Option<String>,
    /// When that error was first seen.
    pub last_error_at: Option<SystemTime>,
}

impl PolicyStatus {
    /// Whether the files on disk are the policy in force.
    pub fn healthy(&self) -> bool {
        self.last_error.is_none()
    }
}

/// A policy read from disk: the compiled policy, its hash and warnings.
struct Loaded {
    rbac: Rbac,
    hash: String,
    warnings: Vec<String>,
}

fn is_policy_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The files of `path` (itself, or a directory's policy files in name order) and their text.
fn read_files(path: &Path) -> Result<Vec<(String, String)>, AuthzError> {
    let cannot = |source| AuthzError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(cannot)?;
    not_writable_by_others(path, &meta)?;
    let mut files = Vec::new();
    if meta.is_dir() {
        let mut entries = Vec::new();
        for e in std::fs::read_dir(path).map_err(cannot)? {
            let p = e.map_err(cannot)?.path();
            // Follows symlinks (ConfigMap volumes); directories are skipped.
            if is_policy_file(&p) && std::fs::metadata(&p).is_ok_and(|m| m.is_file()) {
                entries.push(p);
            }
        }
        entries.sort();
        files = entries;
    } else {
        files.push(path.to_owned());
    }
    files
        .into_iter()
        .map(|f| {
            let read = |source| AuthzError::Read {
                path: f.clone(),
                source,
            };
            let meta = std::fs::metadata(&f).map_err(read)?;
            not_writable_by_others(&f, &meta)?;
            let raw = std::fs::read(&f).map_err(read)?;
            let text =
                String::from_utf8(raw).map_err(|_| AuthzError::NotUtf8 { path: f.clone() })?;
            Ok((f.display().to_string(), text))
        })
        .collect()
}

/// The policy's files and its directory (their targets, through links) must not be writable
/// by group or others, unless their file system is mounted read-only (a ConfigMap volume's
/// directory is world-writable, its mount read-only).
fn not_writable_by_others(path: &Path, meta: &std::fs::Metadata) -> Result<(), AuthzError> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 == 0 {
        return Ok(());
    }
    let read_only = rustix::fs::statvfs(path)
        .is_ok_and(|v| v.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY));
    if read_only {
        return Ok(());
    }
    Err(AuthzError::Writable {
        path: path.to_owned(),
        mode,
    })
}

fn hash_files(files: &[(String, String)]) -> String {
    let mut buf = Vec::new();
    for (name, text) in files {
        for part in [name.as_bytes(), text.as_bytes()] {
            buf.extend_from_slice(&(part.len() as u64).to_be_bytes());
            buf.extend_from_slice(part);
        }
    }
    format!("sha256:{}", hex::encode(crate::crypto::sha256(&buf)))
}

fn compile(path: &Path, files: &[(String, String)], hash: String) -> Result<Loaded, AuthzError> {
    let loaded = parse_policy(files.iter().map(|(n, t)| (n.as_str(), t.as_str())))?;
    let mut warnings = loaded.warnings;
    if files.is_empty() {
        warnings.push(format!(
            "{}: no *.yaml, *.yml or *.json files; only system:masters is allowed anything",
            path.display()
        ));
    }
    Ok(Loaded {
        rbac: Rbac::with_bootstrap(&loaded.set),
        hash,
        warnings,
    })
}

/// The RBAC policy in force, swappable without locks on the request path. It is an
/// [`Authorizer`] and a [`RuleResolver`] that always use the policy current at the call.
#[derive(Debug)]
pub struct Policy {
    current: ArcSwap<Rbac>,
    source: Option<PathBuf>,
    status: Mutex<PolicyStatus>,
    /// The hash of the last invalid content seen, so that it is logged once.
    rejected: Mutex<Option<String>>,
    /// What the watcher saw at its last check when that differed from the policy in force: a
    /// change is acted on only once two checks in a row see it, so that a file caught half
    /// written (truncated, then written, as editors and `kubectl cp` do) is never put in force.
    seen: Mutex<Option<String>>,
}

impl Policy {
    /// A fixed policy built in code (never reloaded).
    pub fn new(rbac: Rbac) -> Policy {
        let status = PolicyStatus {
            source: None,
            hash: String::new(),
            loaded_at: SystemTime::now(),
            counts: rbac.counts(),
            warnings: Vec::new(),
            checks: 0,
            reloads: 0,
            last_error: None,
            last_error_at: None,
        };
        Policy {
            current: ArcSwap::from_pointee(rbac),
            source: None,
            status: Mutex::new(status),
            rejected: Mutex::new(None),
            seen: Mutex::new(None),
        }
    }

    /// Loads the policy at `path` (a file, or a directory's policy files). Any problem is an
    /// error: a server must not start with a policy other than the one it was given. Warnings
    /// are logged and kept in the status.
    pub fn load(path: &Path) -> Result<Policy, AuthzError> {
        let files = read_files(path)?;
        let hash = hash_files(&files);
        let loaded = compile(path, &files, hash)?;
        for w in &loaded.warnings {
            tracing::warn!(policy = %path.display(), "authorization policy: {w}");
        }
        tracing::info!(policy = %path.display(), hash = %loaded.hash, counts = ?loaded.rbac.counts(), "authorization policy loaded");
        let status = PolicyStatus {
            source: Some(path.to_owned()),
            hash: loaded.hash,
            loaded_at: SystemTime::now(),
            counts: loaded.rbac.counts(),
            warnings: loaded.warnings,
            checks: 1,
            reloads: 0,
            last_error: None,
            last_error_at: None,
        };
        Ok(Policy {
            current: ArcSwap::from_pointee(loaded.rbac),
            source: Some(path.to_owned()),
            status: Mutex::new(status),
            rejected: Mutex::new(None),
            seen: Mutex::new(None),
        })
    }

    /// The compiled policy in force now (it stays valid, unchanged, while the caller holds it).
    pub fn current(&self) -> Arc<Rbac> {
        self.current.load_full()
    }

    /// Replaces the policy in force (e.g. after the caller loaded one itself).
    pub fn replace(&self, rbac: Rbac) {
        let counts = rbac.counts();
        self.current.store(Arc::new(rbac));
        let mut st = self.lock_status();
        st.counts = counts;
        st.loaded_at = SystemTime::now();
        st.reloads += 1;
    }

    /// The status now.
    pub fn status(&self) -> PolicyStatus {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> MutexGuard<'_, PolicyStatus> {
        // A panic while holding the lock leaves a status that is still a whole value.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the files once and puts them in force if they changed and are valid. `Ok(true)`:
    /// a new policy is in force; `Ok(false)`: nothing new (the files are the policy in force,
    /// or are the same unusable content already reported, or there is no file to read);
    /// `Err`: the files changed but cannot be used, the policy in force is kept, and the error
    /// is logged and recorded in the status (each distinct problem once).
    pub fn reload(&self) -> Result<bool, AuthzError> {
        self.check(false)
    }

    /// As [`Policy::reload`], but a change (a new content, or a read error) is acted on only
    /// when the previous call saw the same: the watcher's check, which must not act on a file
    /// caught while it is being written.
    pub fn reload_settled(&self) -> Result<bool, AuthzError> {
        self.check(true)
    }

    /// Whether `key` (what this check saw) was also seen by the previous settled check.
    fn settled(&self, key: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.as_deref() == Some(key) {
            return true;
        }
        *seen = Some(key.to_owned());
        false
    }

    fn check(&self, settle: bool) -> Result<bool, AuthzError> {
        let Some(path) = &self.source else {
            return Ok(false);
        };
        let in_force = {
            let mut st = self.lock_status();
            st.checks += 1;
            st.hash.clone()
        };
        let files = match read_files(path) {
            Ok(files) => files,
            Err(e) => {
                let key = e.to_string();
                if settle && !self.settled(&key) {
                    return Ok(false);
                }
                return self.reject(path, key, e);
            }
        };
        let hash = hash_files(&files);
        if hash != in_force && settle && !self.settled(&hash) {
            return Ok(false);
        }
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if hash == in_force {
            // The files are the policy in force (again, if a bad change was undone).
            *self.rejected.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let mut st = self.lock_status();
            if st.last_error.take().is_some() {
                tracing::info!(policy = %path.display(), hash = %hash, "the authorization policy files on disk are the policy in force again");
            }
            st.last_error_at = None;
            return Ok(false);
        }
        let loaded = match compile(path, &files, hash.clone()) {
            Ok(loaded) => loaded,
            Err(e) => return self.reject(path, hash, e),
        };
        let empty = PolicyCounts::default();
        if loaded.rbac.counts() == empty && self.current().counts() != empty {
            let emptied = AuthzError::Emptied {
                path: path.to_owned(),
            };
            return self.reject(path, hash, emptied);
        }
        for w in &loaded.warnings {
            tracing::warn!(policy = %path.display(), "authorization policy: {w}");
        }
        tracing::info!(policy = %path.display(), hash = %loaded.hash, counts = ?loaded.rbac.counts(), "authorization policy reloaded");
        let counts = loaded.rbac.counts();
        self.current.store(Arc::new(loaded.rbac));
        *self.rejected.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut st = self.lock_status();
        st.hash = loaded.hash;
        st.loaded_at = SystemTime::now();
        st.counts = counts;
        st.warnings = loaded.warnings;
        st.reloads += 1;
        st.last_error = None;
        st.last_error_at = None;
        Ok(true)
    }

    /// Keeps the policy in force after `error`; `key` identifies the problem so that it is
    /// logged and returned once.
    fn reject(&self, path: &Path, key: String, error: AuthzError) -> Result<bool, AuthzError> {
        let mut rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        if rejected.as_deref() == Some(key.as_str()) {
            return Ok(false);
        }
        *rejected = Some(key);
        tracing::error!(policy = %path.display(), error = %error, "authorization policy not reloaded; keeping the policy in force");
        let mut st = self.lock_status();
        st.last_error = Some(error.to_string());
        st.last_error_at = Some(SystemTime::now());
        Err(error)
    }

    /// Starts checking the policy every `interval` (a zero interval counts as 1 ms); a change
    /// goes in force at the second check that sees it ([`Policy::reload_settled`]). The task
    /// runs until the returned guard is dropped. Needs a tokio runtime.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> PolicyWatcher {
        let policy = Arc::clone(self);
        let period = interval.max(Duration::from_millis(1));
        let first = tokio::time::Instant::now() + period;
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(first, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Errors are logged and recorded by the check itself.
                let _ = policy.reload_settled();
            }
        });
        PolicyWatcher { task }
    }
}

impl Authorizer for Policy {
    fn authorize(&self, attrs: &Attributes) -> Decision {
        self.current.load().authorize(attrs)
    }
}

impl RuleResolver for Policy {
    fn rules_for(&self, user: &Identity, namespace: &str) -> SubjectRulesReviewStatus {
        RuleResolver::rules_for(&**self.current.load(), user, namespace)
    }
}

/// The background reload of a [`Policy`] ([`Policy::watch`]); dropping it stops the task.
#[derive(Debug)]
pub struct PolicyWatcher {
    task: JoinHandle<()>,
}

impl Drop for PolicyWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests;
