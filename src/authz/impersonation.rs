//! Impersonation as kube-apiserver does it (`pkg/endpoints/filters/impersonation.go`,
//! `kubectl --as`, `--as-group`, `--as-uid`, `--as-user-extra`): a request may act as another
//! user only if its own identity is allowed the verb `impersonate` on each thing it asks for,
//! and then runs, and is authorized and audited, as the impersonated identity.
//!
//! Each part of the request is one check, in this order:
//! - the user: `users` named the user (core group), or, for a service account user name
//!   `system:serviceaccount:<ns>:<name>`, `serviceaccounts` named `<name>` in namespace `<ns>`;
//! - each group: `groups` named the group (core group);
//! - each extra value: `userextras/<key>` named the value, in group `authentication.k8s.io`;
//! - the uid: `uids` named the uid, in group `authentication.k8s.io`.
//!
//! The impersonated identity has exactly the requested groups; a service account without
//! requested groups gets `system:serviceaccounts` and `system:serviceaccounts:<ns>`; every user
//! but `system:anonymous` gets `system:authenticated` unless `system:authenticated` or
//! `system:unauthenticated` is already there (`system:anonymous` gets
//! `system:unauthenticated`). Groups, extra or a uid without a user is a bad request.

use std::collections::BTreeMap;

use super::{verbs, Attributes, Authorizer, AuthzError, Forbidden};
use crate::authn::{names, Identity};
use crate::names::{is_dns1123_label, is_dns1123_subdomain};

/// The API group of `userextras` and `uids`.
pub const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";

/// What a request asks to act as (kube-apiserver's `Impersonate-*` headers).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImpersonationRequest {
    /// The user (`Impersonate-User`), "" for none; a service account is named by its user name
    /// `system:serviceaccount:<ns>:<name>`.
    pub user: String,
    /// The uid (`Impersonate-Uid`), "" for none.
    pub uid: String,
    /// The groups (`Impersonate-Group`, repeated).
    pub groups: Vec<String>,
    /// Extra attributes (`Impersonate-Extra-<key>`); keys are lower-cased, as HTTP header names
    /// are.
    pub extra: BTreeMap<String, Vec<String>>,
}

/// What an impersonation request needs and gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Impersonation {
    /// The requests the caller must be allowed, in order; the first denied one is the answer.
    pub checks: Vec<Attributes>,
    /// The identity the request then runs as.
    pub identity: Identity,
}

/// `serviceaccount.SplitUsername`: the namespace and name of a service account user name.
pub fn split_service_account_username(username: &str) -> Option<(&str, &str)> {
    let rest = username.strip_prefix(names::SERVICE_ACCOUNT_USER_PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (!name.contains(':') && is_dns1123_label(namespace) && is_dns1123_subdomain(name))
        .then_some((namespace, name))
}

/// `serviceaccount.MakeGroupNames`: the groups of every service account of `namespace`.
pub fn service_account_groups(namespace: &str) -> Vec<String> {
    vec![
        names::SYSTEM_SERVICE_ACCOUNTS.to_owned(),
        format!("{}:{namespace}", names::SYSTEM_SERVICE_ACCOUNTS),
    ]
}

/// Go's `%v` of a `v1.ObjectReference` (`{Kind Namespace Name UID APIVersion ResourceVersion
/// FieldPath}`), as kube-apiserver's bad-request message prints the requests.
fn object_reference(
    kind: &str,
    namespace: &str,
    name: &str,
    api_version: &str,
    field_path: &str,
) -> String {
    format!("{{{kind} {namespace} {name}  {api_version}  {field_path}}}")
}

impl ImpersonationRequest {
    /// Whether nothing is asked (the request runs as its caller).
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
            && self.uid.is_empty()
            && self.groups.is_empty()
            && self.extra.is_empty()
    }

    /// The checks and the resulting identity for `requester`; `None` if nothing is asked.
    pub fn plan(&self, requester: &Identity) -> Result<Option<Impersonation>, AuthzError> {
        if self.is_empty() {
            return Ok(None);
        }
        let auth_version = format!("{AUTHENTICATION_GROUP}/v1");
        let check = |resource: &str, group: &str, namespace: &str, name: &str| {
            Attributes::resource(requester.clone(), verbs::IMPERSONATE, resource)
                .with_group(group)
                .with_namespace(namespace)
                .with_name(name)
        };
        let mut checks = Vec::new();
        let mut described = Vec::new();
        let mut groups: Vec<String> = Vec::new();
        if !self.user.is_empty() {
            match split_service_account_username(&self.user) {
                Some((ns, name)) => {
                    checks.push(check("serviceaccounts", "", ns, name));
                    if self.groups.is_empty() {
                        groups = service_account_groups(ns);
                    }
                }
                None => checks.push(check("users", "", "", &self.user)),
            }
        }
        for g in &self.groups {
            checks.push(check("groups", "", "", g));
            described.push(object_reference("Group", "", g, "", ""));
            groups.push(g.clone());
        }
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, values) in &self.extra {
            let key = key.to_lowercase();
            for v in values {
                checks
                    .push(check("userextras", AUTHENTICATION_GROUP, "", v).with_subresource(&key));
                described.push(object_reference("UserExtra", "", v, &auth_version, &key));
                extra.entry(key.clone()).or_default().push(v.clone());
            }
        }
        if !self.uid.is_empty() {
            checks.push(check("uids", AUTHENTICATION_GROUP, "", &self.uid));
            described.push(object_reference("UID", "", &self.uid, &auth_version, ""));
        }
        if self.user.is_empty() {
            return Err(AuthzError::ImpersonationWithoutUser {
                requested: format!("[{}]", described.join(" ")),
            });
        }
        if self.user != names::SYSTEM_ANONYMOUS {
            let has = groups
                .iter()
                .any(|g| g == names::SYSTEM_AUTHENTICATED || g == names::SYSTEM_UNAUTHENTICATED);
            if !has {
                groups.push(names::SYSTEM_AUTHENTICATED.to_owned());
            }
        } else if !groups.iter().any(|g| g == names::SYSTEM_UNAUTHENTICATED) {
            groups.push(names::SYSTEM_UNAUTHENTICATED.to_owned());
        }
        let identity = Identity {
            name: self.user.clone(),
            uid: self.uid.clone(),
            groups,
            extra,
            audit_annotations: Vec::new(),
        };
        Ok(Some(Impersonation { checks, identity }))
    }
}

/// The identity a request of `requester` runs as: `requester` itself if `request` asks
/// nothing, else the impersonated identity once `authz` allows every check. The first denied
/// check is [`AuthzError::Forbidden`] with Kubernetes' message, e.g. `users "bob" is forbidden:
/// User "alice" cannot impersonate resource "users" in API group "" at the cluster scope`.
pub fn impersonate(
    authz: &dyn Authorizer,
    requester: &Identity,
    request: &ImpersonationRequest,
) -> Result<Identity, AuthzError> {
    let Some(plan) = request.plan(requester)? else {
        return Ok(requester.clone());
    };
    for attrs in &plan.checks {
        let decision = authz.authorize(attrs);
        if !decision.allowed() {
            return Err(AuthzError::Forbidden(Forbidden::new(
                attrs,
                decision.reason(),
            )));
        }
    }
    Ok(plan.identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::rbac::parse_policy;
    use crate::authz::Rbac;

    fn alice() -> Identity {
        Identity::new(
            "alice",
            "",
            vec!["ops".into(), "system:authenticated".into()],
        )
    }

    fn check(resource: &str, group: &str, ns: &str, name: &str, sub: &str) -> Attributes {
        Attributes::resource(alice(), "impersonate", resource)
            .with_group(group)
            .with_namespace(ns)
            .with_name(name)
            .with_subresource(sub)
    }

    #[test]
    fn checks_and_identity_of_a_user_with_groups_extra_and_uid() {
        let req = ImpersonationRequest {
            user: "bob".into(),
            uid: "1234".into(),
            groups: vec!["dev".into(), "qa".into()],
            extra: BTreeMap::from([("Scopes".into(), vec!["view".into(), "edit".into()])]),
        };
        let plan = req.plan(&alice()).unwrap().unwrap();
        assert_eq!(
            plan.checks,
            [
                check("users", "", "", "bob", ""),
                check("groups", "", "", "dev", ""),
                check("groups", "", "", "qa", ""),
                check("userextras", "authentication.k8s.io", "", "view", "scopes"),
                check("userextras", "authentication.k8s.io", "", "edit", "scopes"),
                check("uids", "authentication.k8s.io", "", "1234", ""),
            ]
        );
        assert_eq!(
            plan.identity,
            Identity {
                name: "bob".into(),
                uid: "1234".into(),
                groups: vec!["dev".into(), "qa".into(), "system:authenticated".into()],
                extra: BTreeMap::from([("scopes".into(), vec!["view".into(), "edit".into()])]),
                audit_annotations: Vec::new(),
            }
        );
    }

    #[test]
    fn service_accounts_anonymous_and_explicit_authenticated_groups() {
        let sa = ImpersonationRequest {
            user: "system:serviceaccount:prod:app".into(),
            ..ImpersonationRequest::default()
        };
        let plan = sa.plan(&alice()).unwrap().unwrap();
        assert_eq!(
            plan.checks,
            [check("serviceaccounts", "", "prod", "app", "")]
        );
        assert_eq!(
            plan.identity.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:prod",
                "system:authenticated"
            ]
        );
        // With groups given, they replace the service account's.
        let sa_groups = ImpersonationRequest {
            groups: vec!["x".into()],
            ..sa.clone()
        };
        assert_eq!(
            sa_groups.plan(&alice()).unwrap().unwrap().identity.groups,
            ["x", "system:authenticated"]
        );
        // Not a valid service account user name: a plain user.
        let odd = ImpersonationRequest {
            user: "system:serviceaccount:prod:a:b".into(),
            ..ImpersonationRequest::default()
        };
        assert_eq!(
            odd.plan(&alice()).unwrap().unwrap().checks[0].resource,
            "users"
        );
        let anon = ImpersonationRequest {
            user: "system:anonymous".into(),
            ..ImpersonationRequest::default()
        };
        assert_eq!(
            anon.plan(&alice()).unwrap().unwrap().identity.groups,
            ["system:unauthenticated"]
        );
        let unauth = ImpersonationRequest {
            user: "bob".into(),
            groups: vec!["system:unauthenticated".into()],
            ..ImpersonationRequest::default()
        };
        assert_eq!(
            unauth.plan(&alice()).unwrap().unwrap().identity.groups,
            ["system:unauthenticated"]
        );
        assert!(ImpersonationRequest::default()
            .plan(&alice())
            .unwrap()
            .is_none());
    }

    /// kube-apiserver's bad request, with Go's printing of the object references.
    #[test]
    fn groups_without_a_user_are_a_bad_request() {
        let req = ImpersonationRequest {
            groups: vec!["dev".into()],
            extra: BTreeMap::from([("k".into(), vec!["v".into()])]),
            uid: "7".into(),
            ..ImpersonationRequest::default()
        };
        let e = req.plan(&alice()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "requested [{Group  dev    } {UserExtra  v  authentication.k8s.io/v1  k} {UID  7  authentication.k8s.io/v1  }] without impersonating a user"
        );
    }

    #[test]
    fn impersonate_authorizes_every_part() {
        let policy = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonate-bob}
rules:
- {apiGroups: [""], resources: [users], resourceNames: [bob], verbs: [impersonate]}
- {apiGroups: [""], resources: [serviceaccounts], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: ops-impersonate}
subjects: [{kind: Group, name: ops}]
roleRef: {kind: ClusterRole, name: impersonate-bob}
"#;
        let rbac = Rbac::new(&parse_policy([("p.yaml", policy)]).unwrap().set);
        let as_bob = ImpersonationRequest {
            user: "bob".into(),
            ..ImpersonationRequest::default()
        };
        let bob = impersonate(&rbac, &alice(), &as_bob).unwrap();
        assert_eq!(
            (bob.name.as_str(), bob.groups.as_slice()),
            ("bob", &["system:authenticated".to_owned()][..])
        );
        let as_carol = ImpersonationRequest {
            user: "carol".into(),
            ..ImpersonationRequest::default()
        };
        let e = impersonate(&rbac, &alice(), &as_carol).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"users "carol" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        let with_group = ImpersonationRequest {
            groups: vec!["system:masters".into()],
            ..as_bob
        };
        let e = impersonate(&rbac, &alice(), &with_group).unwrap_err();
        assert!(
            matches!(&e, AuthzError::Forbidden(f) if f.resource == "groups" && f.name == "system:masters"),
            "{e}"
        );
        let as_sa = ImpersonationRequest {
            user: "system:serviceaccount:prod:app".into(),
            ..ImpersonationRequest::default()
        };
        assert_eq!(
            impersonate(&rbac, &alice(), &as_sa).unwrap().name,
            "system:serviceaccount:prod:app"
        );
        let nobody = Identity::new("eve", "", vec![]);
        let e = impersonate(&rbac, &nobody, &as_sa).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"serviceaccounts "app" is forbidden: User "eve" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "prod""#
        );
        // Nothing asked: the caller itself.
        assert_eq!(
            impersonate(&rbac, &nobody, &ImpersonationRequest::default()).unwrap(),
            nobody
        );
    }
}
