//! Prometheus metrics: one [`Metrics`] registry per process, filled at the edges and served at
//! `/metrics` by [`MetricsServer`].
//!
//! **Where instrumentation sits.** Nothing below the edges names a metric:
//! - RPCs: [`RpcLayer`], a tower layer on the tonic servers. The KMS socket and the admin socket
//!   report `keyward_kms_*`; the store's API (Unix socket and TLS) reports `keyward_store_*`:
//!   duration by method and gRPC code, requests in flight, errors by code.
//! - State, read at scrape time without touching the hot path: the keyring through a function
//!   returning a [`KeyringReading`] ([`Metrics::watch_keyring`]), so a keyring that is sealed,
//!   or swapped, is reported by whoever holds it; the store's object count (cached), open
//!   watches, migration progress, and its backend's group-commit histograms
//!   ([`Backend::write_stats`](crate::backend::Backend::write_stats): atomics the sled writer
//!   keeps, no metrics crate in the backend) through [`Metrics::watch_store`].
//! - Events other layers report through functions: [`Metrics::audit_write_failed`] and
//!   [`Metrics::authorization_denied`].
//!
//! Crypto, keyring, seal and backend code record nothing here.
//!
//! **Library.** `prometheus-client`, the Prometheus project's Rust client: few dependencies
//! (no protobuf), and since 0.26 it encodes both the Prometheus text format 0.0.4 (served by
//! default: what `curl`, Python's `prometheus_client` parser and most agents read) and
//! OpenMetrics 1.0 (served when the scraper's `Accept` asks for it, as Prometheus does). Its
//! only hot-path cost is an uncontended mutex per histogram observation; label lookups are
//! done once per (method, code) and cached, so an RPC costs two clock reads, one observation
//! and two atomic adds (measured in docs/benchmarks.md).
//!
//! **Labels** come only from fixed sets: the gRPC methods keyward serves (any other path is
//! `other`), gRPC code names as Go spells them (kube-apiserver's `grpc_status_code`), key
//! states, Kubernetes verbs. Never key material, Secret names, namespaces, user names or values;
//! a key id appears only as `sha256:<hex>` ([`crypto::key_id_hash`](crate::crypto::key_id_hash),
//! kube-apiserver's form).

mod http;
mod keyring;
mod policy;
mod rpc;
mod store;

pub use http::MetricsServer;
pub use keyring::{KeyringReading, PrimaryKeyReading};
pub use rpc::{RpcLayer, RpcService, KMS_METHODS, STORE_METHODS};

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::store::Store;
use rpc::RpcMetrics;

/// `Content-Type` of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of OpenMetrics 1.0 text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Kubernetes verbs [`Metrics::authorization_denied`] reports by name; anything else is
/// `other`.
const VERBS: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "impersonate",
];

/// `verb` as a label: one of [`VERBS`], else `other`.
fn verb_label(verb: &str) -> &'static str {
    VERBS
        .iter()
        .find(|v| **v == verb)
        .copied()
        .unwrap_or("other")
}

/// The process's metrics: one registry and what fills it. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Mutex<Registry>,
    kms: OnceLock<Arc<RpcMetrics>>,
    store: OnceLock<Arc<RpcMetrics>>,
    keyring: OnceLock<Arc<keyring::KeyringCollector>>,
    store_state: OnceLock<Arc<store::StoreCollector>>,
    policy: OnceLock<Arc<policy::PolicyCollector>>,
    credential_files: OnceLock<Arc<policy::CredentialFilesCollector>>,
    security: OnceLock<()>,
    audit_write_failures: Counter,
    authorization_denials: Family<[(&'static str, &'static str); 1], Counter>,
    /// Kubernetes API requests by verb and HTTP code, once the API is served.
    kube_requests: Family<[(&'static str, &'static str); 2], Counter>,
    kube: OnceLock<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("kms", &self.inner.kms.get().is_some())
            .field("store", &self.inner.store.get().is_some())
            .field("keyring", &self.inner.keyring.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding `keyward_build_info`; each product adds its metrics when it is
    /// started with this handle.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let build = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "keyward_build_info",
            "Always 1; the version label says which keyward is running",
            build,
        );
        Metrics {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                kms: OnceLock::new(),
                store: OnceLock::new(),
                keyring: OnceLock::new(),
                store_state: OnceLock::new(),
                policy: OnceLock::new(),
                credential_files: OnceLock::new(),
                security: OnceLock::new(),
                audit_write_failures: Counter::default(),
                authorization_denials: Family::default(),
                kube_requests: Family::default(),
                kube: OnceLock::new(),
            }),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The layer for the KMS plugin's servers (KMS socket and admin socket): `keyward_kms_*`.
    pub fn kms_layer(&self) -> RpcLayer {
        let m = self.inner.kms.get_or_init(|| {
            let m = Arc::new(RpcMetrics::new("kms", "KMS plugin", KMS_METHODS));
            m.register(&mut self.registry());
            m
        });
        RpcLayer::new(m.clone())
    }

    /// The layer for the store's API servers: `keyward_store_*`. Also registers the audit and
    /// authorization counters, which belong to the store.
    pub fn store_layer(&self) -> RpcLayer {
        let m = self.inner.store.get_or_init(|| {
            let m = Arc::new(RpcMetrics::new("store", "secret store", STORE_METHODS));
            m.register(&mut self.registry());
            m
        });
        self.register_security();
        RpcLayer::new(m.clone())
    }

    fn register_security(&self) {
        self.inner.security.get_or_init(|| {
            let mut r = self.registry();
            r.register(
                "keyward_audit_write_failures",
                "Audit events that could not be written (the request was refused: audit fails closed; or, for a write that had acted, the loss is recorded in the log)",
                self.inner.audit_write_failures.clone(),
            );
            r.register(
                "keyward_authorization_denials",
                "Requests refused by authorization, by Kubernetes verb",
                self.inner.authorization_denials.clone(),
            );
        });
    }

    /// Reports the keyring through `read`, called at every scrape (it must not block: read
    /// what the keyring holds in memory, as [`KeyringReading::of`] does). A later call replaces
    /// the function, e.g. once a sealed keyring is unsealed.
    pub fn watch_keyring(&self, read: impl Fn() -> KeyringReading + Send + Sync + 'static) {
        let c = self.inner.keyring.get_or_init(|| {
            let c = Arc::new(keyring::KeyringCollector::default());
            self.registry().register_collector(Box::new(c.clone()));
            c
        });
        c.set(Box::new(read));
    }

    /// Reports `store`: Secrets stored (counted at most once a minute), open watches,
    /// migration progress, and its backend's write batches and sync latency. Holds the store
    /// weakly: once it is dropped, these metrics disappear.
    pub fn watch_store(&self, store: &Arc<Store>) {
        let c = self.inner.store_state.get_or_init(|| {
            let c = Arc::new(store::StoreCollector::default());
            self.registry().register_collector(Box::new(c.clone()));
            c
        });
        c.set(store);
        self.register_security();
    }

    /// Reports the authorization policy in force (`keyward_authorization_policy_*`): whether
    /// the files on disk are in force, reloads, when it was loaded. Holds it weakly.
    pub fn watch_policy(&self, policy: &Arc<crate::authz::Policy>) {
        let c = self.inner.policy.get_or_init(|| {
            let c = Arc::new(policy::PolicyCollector::default());
            self.registry().register_collector(Box::new(c.clone()));
            c
        });
        c.set(policy);
    }

    /// Reports the credential files reloaded on change (`keyward_credential_files_*`): whether
    /// their content on disk is in force (vacuously so without any), reloads. Holds them
    /// weakly.
    pub fn watch_credential_files(&self, files: &[Arc<dyn crate::authn::reload::Reload>]) {
        let c = self.inner.credential_files.get_or_init(|| {
            let c = Arc::new(policy::CredentialFilesCollector::default());
            self.registry().register_collector(Box::new(c.clone()));
            c
        });
        c.set(files);
    }

    /// Counts an audit event that could not be written (`keyward_audit_write_failures_total`).
    pub fn audit_write_failed(&self) {
        self.register_security();
        self.inner.audit_write_failures.inc();
    }

    /// Counts a request that authorization refused (`keyward_authorization_denials_total`),
    /// labelled by its Kubernetes verb (`get`, `list`, ...; anything else is `other`). Never
    /// pass who asked or what they named: labels must not carry names.
    pub fn authorization_denied(&self, verb: &str) {
        self.register_security();
        let verb = verb_label(verb);
        self.inner
            .authorization_denials
            .get_or_create(&[("verb", verb)])
            .inc();
    }

    /// Counts a Kubernetes API request (`keyward_kube_requests_total{verb,code}`): `verb` the
    /// Kubernetes verb (anything else is `other`; discovery, OpenAPI and health are `get`),
    /// `code` the HTTP status (codes this API does not answer with are `other`).
    pub fn kube_request(&self, verb: &str, code: u16) {
        self.inner.kube.get_or_init(|| {
            self.registry().register(
                "keyward_kube_requests",
                "Kubernetes API requests, by Kubernetes verb and HTTP status code",
                self.inner.kube_requests.clone(),
            );
        });
        const CODES: &[&str] = &[
            "200", "201", "400", "401", "403", "404", "405", "406", "409", "410", "413", "415",
            "422", "429", "500", "503", "504",
        ];
        let code = code.to_string();
        let code = CODES
            .iter()
            .find(|c| **c == code)
            .copied()
            .unwrap_or("other");
        let verb = VERBS
            .iter()
            .find(|v| **v == verb)
            .copied()
            .unwrap_or("other");
        self.inner
            .kube_requests
            .get_or_create(&[("verb", verb), ("code", code)])
            .inc();
    }

    /// Every metric, in OpenMetrics 1.0 text if `openmetrics`, else in the Prometheus text
    /// format 0.0.4. Refreshes what is counted lazily (the store's objects) first.
    pub async fn render(&self, openmetrics: bool) -> String {
        if let Some(s) = self.inner.store_state.get() {
            s.refresh().await;
        }
        let registry = self.registry();
        let mut out = String::new();
        let res = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        };
        // Writing to a String cannot fail; an encoder error would be a bug in a collector.
        if let Err(e) = res {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn security_counters_are_registered_with_the_store_and_bound_their_labels() {
        let m = Metrics::new();
        let text = m.render(false).await;
        assert!(text.contains("keyward_build_info{version=\""), "{text}");
        assert!(!text.contains("keyward_audit"), "{text}");
        m.audit_write_failed();
        m.authorization_denied("get");
        m.authorization_denied("get");
        m.authorization_denied("secrets/db");
        let text = m.render(false).await;
        assert!(
            text.contains("keyward_audit_write_failures_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("keyward_authorization_denials_total{verb=\"get\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("keyward_authorization_denials_total{verb=\"other\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("secrets/db"), "{text}");
        let om = m.render(true).await;
        assert!(om.ends_with("# EOF\n"), "{om}");
    }
}
