//! Who is asking: the [`Identity`] every authenticator produces (user name, uid, groups, extra),
//! as kube-apiserver's `user.Info`, and the well-known names Kubernetes reserves.
//!
//! Authenticators (Unix peer credentials, TLS client certificates, static and bootstrap tokens,
//! service account tokens) turn a connection or a credential into an `Identity`; they know
//! nothing of HTTP or gRPC, so every front end (the gRPC API, the Kubernetes REST API) uses the
//! same ones.

use std::collections::BTreeMap;
use std::fmt;

/// Kubernetes' reserved group and user names (`k8s.io/apiserver/pkg/authentication/user`).
pub mod names {
    /// Members may do everything; RBAC is not consulted.
    pub const SYSTEM_MASTERS: &str = "system:masters";
    /// Added to every authenticated identity.
    pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";
    /// The group of requests without credentials (never granted anything by default).
    pub const SYSTEM_UNAUTHENTICATED: &str = "system:unauthenticated";
    /// The user of requests without credentials.
    pub const SYSTEM_ANONYMOUS: &str = "system:anonymous";
    /// The user the server's own uid and root map to on the Unix socket by default.
    pub const SYSTEM_ADMIN: &str = "system:admin";
    /// Prefix of service account user names: `system:serviceaccount:<ns>:<name>`.
    pub const SERVICE_ACCOUNT_USER_PREFIX: &str = "system:serviceaccount:";
    /// Group of every service account.
    pub const SYSTEM_SERVICE_ACCOUNTS: &str = "system:serviceaccounts";
}

/// An authenticated caller: Kubernetes' `user.Info`. Carries no credential.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The user name, e.g. `alice`, `system:serviceaccount:prod:app`.
    pub name: String,
    /// A stable id, if the authenticator knows one ("" otherwise).
    pub uid: String,
    /// Groups, in the order the authenticator gave them; `system:authenticated` included once
    /// authentication succeeded.
    pub groups: Vec<String>,
    /// Extra attributes (lower-case, namespaced keys), e.g.
    /// `authentication.kubernetes.io/credential-id`.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// An identity with `name`, `uid` and `groups` and no extra attributes.
    pub fn new(name: impl Into<String>, uid: impl Into<String>, groups: Vec<String>) -> Self {
        Self {
            name: name.into(),
            uid: uid.into(),
            groups,
            extra: BTreeMap::new(),
        }
    }

    /// Whether the identity is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// Adds `system:authenticated` as kube-apiserver's `AuthenticatedGroupAdder` does: unless
    /// the user is `system:anonymous` or already has `system:authenticated` or
    /// `system:unauthenticated`.
    pub fn with_authenticated_group(mut self) -> Self {
        if self.name != names::SYSTEM_ANONYMOUS
            && !self.in_group(names::SYSTEM_AUTHENTICATED)
            && !self.in_group(names::SYSTEM_UNAUTHENTICATED)
        {
            self.groups.push(names::SYSTEM_AUTHENTICATED.to_owned());
        }
        self
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("uid", &self.uid)
            .field("groups", &self.groups)
            .field("extra", &self.extra)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticated_group_is_added_once_and_never_to_anonymous() {
        let a = Identity::new("alice", "", vec!["dev".into()]).with_authenticated_group();
        assert_eq!(a.groups, ["dev", names::SYSTEM_AUTHENTICATED]);
        assert_eq!(a.clone().with_authenticated_group(), a);
        let anon = Identity::new(names::SYSTEM_ANONYMOUS, "", vec![]).with_authenticated_group();
        assert!(anon.groups.is_empty());
        let unauth = Identity::new("x", "", vec![names::SYSTEM_UNAUTHENTICATED.into()])
            .with_authenticated_group();
        assert_eq!(unauth.groups, [names::SYSTEM_UNAUTHENTICATED]);
    }
}
