//! The `rbac.authorization.k8s.io/v1` objects as plain Rust values (upstream
//! `k8s.io/api/rbac/v1/types.go`), after defaulting: an empty subject or roleRef `apiGroup` is
//! already filled in as the v1 defaults do.

use std::collections::BTreeMap;

/// The API group of RBAC objects, of User and Group subjects and of role references.
pub const GROUP_NAME: &str = "rbac.authorization.k8s.io";
/// The only `apiVersion` RBAC objects are read in.
pub const API_VERSION: &str = "rbac.authorization.k8s.io/v1";
/// `*`: every verb, API group, resource or non-resource URL.
pub const ALL: &str = "*";

/// Subject kind of a user.
pub const USER_KIND: &str = "User";
/// Subject kind of a group.
pub const GROUP_KIND: &str = "Group";
/// Subject kind of a service account.
pub const SERVICE_ACCOUNT_KIND: &str = "ServiceAccount";

/// The parts of `metadata` RBAC evaluation reads; other metadata fields are accepted and
/// ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectMeta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` ("" for ClusterRoles and ClusterRoleBindings).
    pub namespace: String,
    /// `metadata.labels` (aggregation rules select ClusterRoles by them).
    pub labels: BTreeMap<String, String>,
    /// Annotated `rbac.authorization.kubernetes.io/autoupdate: "false"`: a bootstrap object of
    /// this name is left as the policy writes it, not reconciled with the defaults.
    pub protected: bool,
}

impl ObjectMeta {
    /// Metadata with `name` and `namespace` and no labels.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            labels: BTreeMap::new(),
            protected: false,
        }
    }
}

/// One rule of a Role or ClusterRole: the verbs allowed on resources, or on non-resource URLs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct PolicyRule {
    /// `verbs`; `*` is every verb.
    pub verbs: Vec<String>,
    /// `apiGroups`; "" is the core group, `*` every group.
    pub api_groups: Vec<String>,
    /// `resources`: `secrets`, `pods/status`, `*/scale` or `*`.
    pub resources: Vec<String>,
    /// `resourceNames`; empty allows every name.
    pub resource_names: Vec<String>,
    /// `nonResourceURLs`: exact paths, or a path ending in `*` for a prefix; `*` is every path.
    pub non_resource_urls: Vec<String>,
}

/// `aggregationRule` of a ClusterRole: its rules are the union of the rules of the ClusterRoles
/// that any selector matches (computed when the policy is loaded, as the aggregation controller
/// does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AggregationRule {
    /// `clusterRoleSelectors`.
    pub cluster_role_selectors: Vec<LabelSelector>,
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, all of which must hold).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// `matchLabels`: each label must have exactly this value.
    pub match_labels: BTreeMap<String, String>,
    /// `matchExpressions`.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the label is compared.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`; empty for `Exists` and `DoesNotExist`.
    pub values: Vec<String>,
}

/// `matchExpressions[].operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorOperator {
    /// The label is set to one of the values.
    In,
    /// The label is unset or set to none of the values.
    NotIn,
    /// The label is set.
    Exists,
    /// The label is unset.
    DoesNotExist,
}

/// A Role: rules that apply in its namespace, through RoleBindings of that namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Role {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// `rules`.
    pub rules: Vec<PolicyRule>,
}

/// A ClusterRole: rules granted cluster-wide by a ClusterRoleBinding, or in one namespace by a
/// RoleBinding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterRole {
    /// Name (no namespace) and labels.
    pub metadata: ObjectMeta,
    /// `rules` (for an aggregated ClusterRole, the aggregated rules once loaded).
    pub rules: Vec<PolicyRule>,
    /// `aggregationRule`, if any.
    pub aggregation_rule: Option<AggregationRule>,
}

/// Who a binding grants its role to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subject {
    /// `User`, `Group` or `ServiceAccount` (any other kind never matches).
    pub kind: String,
    /// `rbac.authorization.k8s.io` for users and groups, "" for service accounts.
    pub api_group: String,
    /// The user, group or service account name (exact; `*` is not a wildcard).
    pub name: String,
    /// A service account's namespace ("" in a RoleBinding: the binding's namespace).
    pub namespace: String,
}

impl Subject {
    /// A `User` subject.
    pub fn user(name: impl Into<String>) -> Self {
        Self::new(USER_KIND, GROUP_NAME, name, "")
    }

    /// A `Group` subject.
    pub fn group(name: impl Into<String>) -> Self {
        Self::new(GROUP_KIND, GROUP_NAME, name, "")
    }

    /// A `ServiceAccount` subject (`namespace` "" means the RoleBinding's namespace).
    pub fn service_account(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(SERVICE_ACCOUNT_KIND, "", name, namespace)
    }

    fn new(kind: &str, api_group: &str, name: impl Into<String>, ns: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            api_group: api_group.to_owned(),
            name: name.into(),
            namespace: ns.into(),
        }
    }
}

/// The role a binding grants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleRef {
    /// `rbac.authorization.k8s.io`.
    pub api_group: String,
    /// `Role` or `ClusterRole`.
    pub kind: String,
    /// The role's name.
    pub name: String,
}

impl RoleRef {
    /// A reference to the ClusterRole `name`.
    pub fn cluster_role(name: impl Into<String>) -> Self {
        Self {
            api_group: GROUP_NAME.to_owned(),
            kind: "ClusterRole".to_owned(),
            name: name.into(),
        }
    }

    /// A reference to the Role `name` of the binding's namespace.
    pub fn role(name: impl Into<String>) -> Self {
        Self {
            api_group: GROUP_NAME.to_owned(),
            kind: "Role".to_owned(),
            name: name.into(),
        }
    }
}

/// Grants a Role of its namespace, or a ClusterRole, in its namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleBinding {
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// `subjects`.
    pub subjects: Vec<Subject>,
    /// `roleRef`.
    pub role_ref: RoleRef,
}

/// Grants a ClusterRole cluster-wide.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterRoleBinding {
    /// Name (no namespace).
    pub metadata: ObjectMeta,
    /// `subjects`.
    pub subjects: Vec<Subject>,
    /// `roleRef` (always a ClusterRole).
    pub role_ref: RoleRef,
}

/// Every RBAC object of a policy, in the order they were read. [`Rbac::new`](super::Rbac::new)
/// evaluates them; building one by hand skips the validation loading does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySet {
    /// Roles.
    pub roles: Vec<Role>,
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// RoleBindings.
    pub role_bindings: Vec<RoleBinding>,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl PolicySet {
    /// How many objects of each kind.
    pub fn counts(&self) -> PolicyCounts {
        PolicyCounts {
            roles: self.roles.len(),
            cluster_roles: self.cluster_roles.len(),
            role_bindings: self.role_bindings.len(),
            cluster_role_bindings: self.cluster_role_bindings.len(),
        }
    }
}

/// Number of objects of each kind in a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyCounts {
    /// Roles.
    pub roles: usize,
    /// ClusterRoles.
    pub cluster_roles: usize,
    /// RoleBindings.
    pub role_bindings: usize,
    /// ClusterRoleBindings.
    pub cluster_role_bindings: usize,
}
