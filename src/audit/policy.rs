//! The `audit.k8s.io/v1` Policy: parsing (as kube-apiserver's `LoadPolicyFromBytes`: an
//! unknown field is a warning naming it, and the policy is read without it), validation with
//! kube-apiserver's messages, and the rule matcher of
//! `k8s.io/apiserver/pkg/audit/policy/checker.go` — the first matching rule decides the level;
//! no match is level `None`; a rule's `omitStages` are unioned with the policy's.

use std::path::Path;

use serde::Deserialize;

use super::event::{Level, Stage};
use super::AuditError;
use crate::authn::Identity;
use crate::authz::Attributes;
use crate::authz::{go_quote, go_string_slice};
use crate::names::dns1123_subdomain_errors;

/// A set of [`Stage`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Stages(u8);

impl Stages {
    /// No stage.
    pub const NONE: Stages = Stages(0);

    fn bit(stage: Stage) -> u8 {
        1 << (stage as u8)
    }

    /// Whether `stage` is in the set.
    pub fn contains(self, stage: Stage) -> bool {
        self.0 & Self::bit(stage) != 0
    }

    /// The set with `stage` added.
    pub fn with(self, stage: Stage) -> Stages {
        Stages(self.0 | Self::bit(stage))
    }

    /// The union of both sets.
    pub fn union(self, other: Stages) -> Stages {
        Stages(self.0 | other.0)
    }

    /// The stages in the set, in request order.
    pub fn iter(self) -> impl Iterator<Item = Stage> {
        Stage::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Stage> for Stages {
    fn from_iter<I: IntoIterator<Item = Stage>>(iter: I) -> Self {
        iter.into_iter().fold(Stages::NONE, Stages::with)
    }
}

/// What the policy decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestAuditConfig {
    /// The level; `None` records nothing.
    pub level: Level,
    /// Stages for which no event is written.
    pub omit_stages: Stages,
    /// Drop `metadata.managedFields` from logged objects.
    pub omit_managed_fields: bool,
}

impl RequestAuditConfig {
    /// Nothing is recorded (no policy file, or no matching rule without policy stages).
    pub const NONE: RequestAuditConfig = RequestAuditConfig {
        level: Level::None,
        omit_stages: Stages::NONE,
        omit_managed_fields: false,
    };
}

/// A validated `audit.k8s.io/v1` Policy.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: Stages,
    omit_managed_fields: bool,
    /// The fields the policy names that it has not (`unknown field "rules[0].levle"`).
    warnings: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    level: Level,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    non_resource_urls: Vec<String>,
    /// Already unioned with the policy's.
    omit_stages: Stages,
    omit_managed_fields: Option<bool>,
}

#[derive(Debug, Clone)]
struct GroupResources {
    group: String,
    resources: Vec<String>,
    resource_names: Vec<String>,
}

impl Policy {
    /// Reads and validates the policy file at `path` (YAML or JSON).
    pub fn load(path: &Path) -> Result<Policy, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::PolicyRead {
            path: path.to_owned(),
            source,
        })?;
        let policy = Policy::parse(&text)?;
        if !policy.warnings.is_empty() {
            // kube-apiserver's words when its strict decoding fails and its lenient one does not.
            tracing::warn!(
                path = %path.display(),
                "Audit policy contains errors, falling back to lenient decoding: strict decoding error: {}",
                policy.warnings.join(", ")
            );
        }
        Ok(policy)
    }

    /// Decodes and validates a policy; unknown fields are left out and listed in
    /// [`Policy::warnings`].
    pub fn parse(text: &str) -> Result<Policy, AuditError> {
        let invalid = |m: String| AuditError::PolicyInvalid(vec![m]);
        if text.trim().is_empty() {
            return Err(invalid("the file is empty".into()));
        }
        // Read as text (errors name the line), and as a tree for the fields it should not have.
        // A key repeated in a mapping is a strict decoding error to kube-apiserver, which then
        // decodes leniently (the last value wins) and warns: so here.
        let repeated = crate::manifest::yaml_keys::repeated_keys(text.as_bytes());
        let raw: RawPolicy = if repeated.is_empty() {
            serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?
        } else {
            let lenient: serde_json::Value =
                serde_yaml_ng::from_str(text).map_err(|e| invalid(e.to_string()))?;
            RawPolicy::deserialize(&lenient).map_err(|e| invalid(e.to_string()))?
        };
        let mut warnings = serde_yaml_ng::from_str(text)
            .map(|v| unknown_fields(&v))
            .unwrap_or_default();
        warnings.extend(repeated);
        match (raw.api_version.as_deref(), raw.kind.as_deref()) {
            (Some("audit.k8s.io/v1"), Some("Policy")) => {}
            (None, _) | (_, None) => {
                return Err(invalid(
                    "apiVersion and kind are required: apiVersion: audit.k8s.io/v1, kind: Policy"
                        .into(),
                ))
            }
            (Some(v), Some(k)) => {
                return Err(invalid(format!(
                    "no kind {k:?} is registered for version {v:?}: expected apiVersion: audit.k8s.io/v1, kind: Policy"
                )))
            }
        }
        let mut errs = Vec::new();
        let omit_stages = stages(raw.omit_stages.unwrap_or_default(), "omitStages", &mut errs);
        let raw_rules = raw.rules.unwrap_or_default();
        if raw_rules.is_empty() {
            // kube-apiserver's reader refuses it after validation, in these words.
            errs.push("loaded illegal policy with 0 rules".into());
        }
        let rules: Vec<Rule> = raw_rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| rule(r, &format!("rules[{i}]"), omit_stages, &mut errs))
            .collect();
        if !errs.is_empty() {
            return Err(AuditError::PolicyInvalid(errs));
        }
        Ok(Policy {
            rules,
            omit_stages,
            omit_managed_fields: raw.omit_managed_fields.unwrap_or(false),
            warnings,
        })
    }

    /// The fields of the policy that an `audit.k8s.io/v1` Policy has not, each as
    /// `unknown field "rules[0].levle"`: left out, as kube-apiserver's lenient decoding leaves
    /// them out (it warns, and serves).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// How many rules the policy has.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The level and omitted stages for a request by `user` (the *authenticated* user, as
    /// kube-apiserver evaluates the policy before impersonation) described by `attrs`.
    pub fn evaluate(&self, user: &Identity, attrs: &Attributes) -> RequestAuditConfig {
        match self.rules.iter().find(|r| r.matches(user, attrs)) {
            Some(r) => RequestAuditConfig {
                level: r.level,
                omit_stages: r.omit_stages,
                omit_managed_fields: r.omit_managed_fields.unwrap_or(self.omit_managed_fields),
            },
            None => RequestAuditConfig {
                level: Level::None,
                omit_stages: self.omit_stages,
                omit_managed_fields: self.omit_managed_fields,
            },
        }
    }
}

impl Rule {
    /// `ruleMatches`: every field set must match (an empty list matches everything); an
    /// unauthenticated request (no user name) matches no rule that names users or groups.
    fn matches(&self, user: &Identity, attrs: &Attributes) -> bool {
        let has_user = !user.name.is_empty();
        let user_matches = has_user && self.users.contains(&user.name);
        if !self.users.is_empty() && !user_matches {
            return false;
        }
        let group_matches = has_user && user.groups.iter().any(|g| self.user_groups.contains(g));
        if !self.user_groups.is_empty() && !group_matches {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&attrs.verb) {
            return false;
        }
        if !self.namespaces.is_empty() || !self.resources.is_empty() {
            return self.matches_resource(attrs);
        }
        if !self.non_resource_urls.is_empty() {
            return match &attrs.path {
                Some(path) => self.non_resource_urls.iter().any(|s| path_matches(path, s)),
                None => false,
            };
        }
        true
    }

    fn matches_resource(&self, attrs: &Attributes) -> bool {
        if !attrs.is_resource_request() {
            return false;
        }
        // Non-namespaced resources use the empty string.
        if !self.namespaces.is_empty() && !self.namespaces.contains(&attrs.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let (resource, sub) = (attrs.resource.as_str(), attrs.subresource.as_str());
        let combined = if sub.is_empty() {
            resource.to_owned()
        } else {
            format!("{resource}/{sub}")
        };
        self.resources.iter().any(|gr| {
            if gr.group != attrs.api_group {
                return false;
            }
            if gr.resources.is_empty() {
                return true;
            }
            if !gr.resource_names.is_empty() && !gr.resource_names.contains(&attrs.name) {
                return false;
            }
            gr.resources.iter().any(|res| {
                res == &combined
                    || res == "*"
                    || (!sub.is_empty() && res.strip_prefix("*/") == Some(sub))
                    || res.strip_suffix("/*") == Some(resource)
            })
        })
    }
}

/// `pathMatches`: `*`, an exact path, or a `prefix*`.
fn path_matches(path: &str, spec: &str) -> bool {
    spec == "*"
        || spec == path
        || spec
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

// ----- decoding and validation -----

const POLICY_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "rules",
    "omitStages",
    "omitManagedFields",
];
const RULE_FIELDS: &[&str] = &[
    "level",
    "users",
    "userGroups",
    "verbs",
    "resources",
    "namespaces",
    "nonResourceURLs",
    "omitStages",
    "omitManagedFields",
];
const GROUP_RESOURCES_FIELDS: &[&str] = &["group", "resources", "resourceNames"];

/// `unknown field "<path>"` for each key of `policy` (a policy, its rules, their resources)
/// that the type has not, in document order, as kube-apiserver's strict decoder names them.
fn unknown_fields(policy: &serde_yaml_ng::Value) -> Vec<String> {
    use serde_yaml_ng::Value;
    fn check(v: &Value, known: &[&str], at: &str, out: &mut Vec<String>) {
        let Value::Mapping(m) = v else { return };
        for k in m.keys() {
            let key = match k {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            if !known.contains(&key.as_str()) {
                let path = if at.is_empty() {
                    key
                } else {
                    format!("{at}.{key}")
                };
                out.push(format!("unknown field {path:?}"));
            }
        }
    }
    let mut out = Vec::new();
    check(policy, POLICY_FIELDS, "", &mut out);
    if let Some(Value::Sequence(rules)) = policy.get("rules") {
        for (i, r) in rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            check(r, RULE_FIELDS, &at, &mut out);
            if let Some(Value::Sequence(res)) = r.get("resources") {
                for (j, g) in res.iter().enumerate() {
                    check(
                        g,
                        GROUP_RESOURCES_FIELDS,
                        &format!("{at}.resources[{j}]"),
                        &mut out,
                    );
                }
            }
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPolicy {
    api_version: Option<String>,
    kind: Option<String>,
    /// ObjectMeta, for interoperability; ignored.
    #[allow(dead_code)] // accepted and ignored, as kube-apiserver does
    metadata: Option<serde_yaml_ng::Value>,
    rules: Option<Vec<RawRule>>,
    omit_stages: Option<Vec<String>>,
    omit_managed_fields: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    level: Option<String>,
    users: Option<Vec<String>>,
    user_groups: Option<Vec<String>>,
    verbs: Option<Vec<String>>,
    resources: Option<Vec<RawGroupResources>>,
    namespaces: Option<Vec<String>>,
    #[serde(rename = "nonResourceURLs")]
    non_resource_urls: Option<Vec<String>>,
    omit_stages: Option<Vec<String>>,
    omit_managed_fields: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawGroupResources {
    group: Option<String>,
    resources: Option<Vec<String>>,
    resource_names: Option<Vec<String>>,
}

fn rule(r: RawRule, path: &str, policy_stages: Stages, errs: &mut Vec<String>) -> Rule {
    let level = match r.level.as_deref() {
        None | Some("") => {
            errs.push(format!("{path}.level: Required value"));
            Level::None
        }
        Some(l) => Level::ALL
            .into_iter()
            .find(|v| v.as_str() == l)
            .unwrap_or_else(|| {
                errs.push(format!(
                    "{path}.level: Unsupported value: {}: supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\"",
                    go_quote(l)
                ));
                Level::None
            }),
    };
    let non_resource_urls = r.non_resource_urls.unwrap_or_default();
    for (i, url) in non_resource_urls.iter().enumerate() {
        if url == "*" {
            continue;
        }
        let at = format!(
            "{path}.nonResourceURLs[{i}]: Invalid value: {}",
            go_quote(url)
        );
        if !url.starts_with('/') {
            errs.push(format!(
                "{at}: non-resource URL rules must begin with a '/' character"
            ));
        }
        // Bytes, as Go's `url[:len(url)-1]`: the last character may be more than one byte.
        if url.len() > 1 && url.as_bytes()[..url.len() - 1].contains(&b'*') {
            errs.push(format!(
                "{at}: non-resource URL wildcards '*' must be the final character of the rule"
            ));
        }
    }
    let resources: Vec<GroupResources> = r
        .resources
        .unwrap_or_default()
        .into_iter()
        .map(|gr| {
            // Not indexed, as kube-apiserver's `validateResources` names them.
            let at = format!("{path}.resources");
            let group = gr.group.unwrap_or_default();
            // Any group but the core one (empty) is a DNS subdomain: `*` is not a wildcard
            // here, unlike in RBAC (kube-apiserver's checker compares groups exactly).
            if !group.is_empty() {
                let problems = dns1123_subdomain_errors(&group);
                if !problems.is_empty() {
                    errs.push(format!(
                        "{at}.group: Invalid value: {}: {}",
                        go_quote(&group),
                        problems.join(",")
                    ));
                }
            }
            let resources = gr.resources.unwrap_or_default();
            let resource_names = gr.resource_names.unwrap_or_default();
            if !resource_names.is_empty() && resources.is_empty() {
                errs.push(format!(
                    "{at}.resourceNames: Invalid value: {}: using resourceNames requires at least one resource",
                    go_string_slice(&resource_names)
                ));
            }
            GroupResources {
                group,
                resources,
                resource_names,
            }
        })
        .collect();
    let namespaces = r.namespaces.unwrap_or_default();
    if !non_resource_urls.is_empty() && (!resources.is_empty() || !namespaces.is_empty()) {
        errs.push(format!(
            "{path}.nonResourceURLs: Invalid value: {}: rules cannot apply to both regular resources and non-resource URLs",
            go_string_slice(&non_resource_urls)
        ));
    }
    let omit = stages(
        r.omit_stages.unwrap_or_default(),
        &format!("{path}.omitStages"),
        errs,
    );
    Rule {
        level,
        users: r.users.unwrap_or_default(),
        user_groups: r.user_groups.unwrap_or_default(),
        verbs: r.verbs.unwrap_or_default(),
        resources,
        namespaces,
        non_resource_urls,
        omit_stages: omit.union(policy_stages),
        omit_managed_fields: r.omit_managed_fields,
    }
}

fn stages(names: Vec<String>, path: &str, errs: &mut Vec<String>) -> Stages {
    let mut out = Stages::NONE;
    for (i, name) in names.into_iter().enumerate() {
        match Stage::ALL.into_iter().find(|s| s.as_str() == name) {
            Some(s) => out = out.with(s),
            None => errs.push(format!(
                "{path}[{i}]: Invalid value: {}: allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic",
                go_quote(&name)
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::{Metadata, Request, RequestResponse};
    use Stage::{Panic, RequestReceived, ResponseComplete, ResponseStarted};

    // Port of k8s.io/apiserver pkg/audit/policy/checker_test.go (kubernetes/kubernetes
    // staging, commit 04791b49): the same requests, rules and expectations.

    fn tim() -> Identity {
        Identity::new("tim@k8s.io", "", vec!["humans".into(), "developers".into()])
    }

    fn attrs(name: &str) -> Attributes {
        let resource = |ns: &str, group: &str, res: &str, sub: &str, obj: &str| Attributes {
            user: tim(),
            verb: "get".into(),
            namespace: ns.into(),
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            name: obj.into(),
            path: None,
        };
        match name {
            "namespaced" => resource("default", "", "pods", "", "busybox"),
            "cluster" => resource("", "rbac.authorization.k8s.io", "clusterroles", "", "edit"),
            "nonResource" => Attributes {
                user: tim(),
                verb: "get".into(),
                path: Some("/logs/kubelet.log".into()),
                ..Default::default()
            },
            "subresource" => resource("default", "", "pods", "log", "busybox"),
            "Unauthorized" => Attributes {
                user: Identity::default(),
                ..resource("default", "", "pods", "", "busybox")
            },
            other => panic!("no request {other}"),
        }
    }

    fn rule_yaml(name: &str) -> &'static str {
        match name {
            "default" => "- level: Metadata\n",
            "create" => "- level: Request\n  verbs: [create]\n",
            "tims" => "- level: Metadata\n  users: [\"tim@k8s.io\"]\n",
            "humans" => "- level: Metadata\n  userGroups: [humans]\n",
            "serviceAccounts" => "- level: Request\n  userGroups: [\"system:serviceaccounts\"]\n",
            "getPods" => "- level: RequestResponse\n  verbs: [get]\n  resources: [{resources: [pods]}]\n",
            "getPodLogs" => "- level: Request\n  verbs: [get]\n  resources: [{resources: [pods/log]}]\n",
            "getPodWildcardMatching" => "- level: Request\n  verbs: [get]\n  resources: [{resources: [\"*\"]}]\n",
            "getPodResourceWildcardMatching" => "- level: Request\n  verbs: [get]\n  resources: [{resources: [\"*/log\"]}]\n",
            "getPodSubResourceWildcardMatching" => "- level: Request\n  verbs: [get]\n  resources: [{resources: [\"pods/*\"]}]\n",
            "getClusterRoles" => "- level: RequestResponse\n  verbs: [get]\n  resources: [{group: rbac.authorization.k8s.io, resources: [clusterroles]}]\n  namespaces: [\"\"]\n",
            "getLogs" => "- level: RequestResponse\n  verbs: [get]\n  nonResourceURLs: [\"/logs*\"]\n",
            "getMetrics" => "- level: Request\n  verbs: [get]\n  nonResourceURLs: [/metrics]\n",
            "clusterRoleEdit" => "- level: Request\n  resources: [{group: rbac.authorization.k8s.io, resources: [clusterroles], resourceNames: [edit]}]\n",
            "omit RequestReceived" => "- level: Request\n  omitStages: [RequestReceived]\n",
            "only audit panic" => "- level: Request\n  omitStages: [RequestReceived, ResponseStarted, ResponseComplete]\n",
            other => panic!("no rule {other}"),
        }
    }

    fn policy(stages: &[Stage], rules: &[&str]) -> Policy {
        let mut text = String::from("apiVersion: audit.k8s.io/v1\nkind: Policy\n");
        let names: Vec<&str> = stages.iter().map(|s| s.as_str()).collect();
        text.push_str(&format!("omitStages: [{}]\nrules:\n", names.join(", ")));
        for r in rules {
            text.push_str(rule_yaml(r));
        }
        Policy::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn check(req: &str, level: Level, policy_stages: &[Stage], omit: &[Stage], rules: &[&str]) {
        let a = attrs(req);
        let got = policy(policy_stages, rules).evaluate(&a.user, &a);
        assert_eq!(got.level, level, "request {req} rules {rules:?}");
        assert_eq!(
            got.omit_stages,
            omit.iter().copied().collect(),
            "request {req} rules {rules:?}"
        );
    }

    fn audit_levels(s: &[Stage]) {
        use Level::None as N;
        let t = |req, level, rules: &[&str]| check(req, level, s, s, rules);
        t("namespaced", Metadata, &["default"]);
        t("namespaced", N, &["create"]);
        t("namespaced", Metadata, &["tims"]);
        t("namespaced", Metadata, &["humans"]);
        t("namespaced", N, &["serviceAccounts"]);
        t("namespaced", RequestResponse, &["getPods"]);
        t("namespaced", N, &["getClusterRoles"]);
        t("namespaced", N, &["getLogs"]);
        t("namespaced", N, &["getMetrics"]);
        t(
            "namespaced",
            Metadata,
            &["getMetrics", "serviceAccounts", "default"],
        );
        t(
            "namespaced",
            RequestResponse,
            &["getMetrics", "getPods", "default"],
        );
        t("namespaced", RequestResponse, &["getPodLogs", "getPods"]);

        t("cluster", Metadata, &["default"]);
        t("cluster", N, &["create"]);
        t("cluster", Metadata, &["tims"]);
        t("cluster", Metadata, &["humans"]);
        t("cluster", N, &["serviceAccounts"]);
        t("cluster", N, &["getPods"]);
        t("cluster", RequestResponse, &["getClusterRoles"]);
        t("cluster", Request, &["clusterRoleEdit", "getClusterRoles"]);
        t("cluster", N, &["getLogs"]);
        t("cluster", N, &["getMetrics"]);
        t(
            "cluster",
            Metadata,
            &["getMetrics", "serviceAccounts", "default"],
        );
        t(
            "cluster",
            RequestResponse,
            &["getMetrics", "getClusterRoles", "default"],
        );
        t("cluster", N, &["getPodLogs", "getPods"]);

        t("nonResource", Metadata, &["default"]);
        t("nonResource", N, &["create"]);
        t("nonResource", Metadata, &["tims"]);
        t("nonResource", Metadata, &["humans"]);
        t("nonResource", N, &["serviceAccounts"]);
        t("nonResource", N, &["getPods"]);
        t("nonResource", N, &["getClusterRoles"]);
        t("nonResource", RequestResponse, &["getLogs"]);
        t("nonResource", N, &["getMetrics"]);
        t(
            "nonResource",
            Metadata,
            &["getMetrics", "serviceAccounts", "default"],
        );
        t(
            "nonResource",
            RequestResponse,
            &["getLogs", "getClusterRoles", "default"],
        );
        t("nonResource", N, &["getPodLogs", "getPods"]);

        t("subresource", Request, &["getPodLogs", "getPods"]);
        t("subresource", Request, &["getPodWildcardMatching"]);
        t("subresource", Request, &["getPodResourceWildcardMatching"]);
        t(
            "subresource",
            Request,
            &["getPodSubResourceWildcardMatching"],
        );

        t("Unauthorized", N, &["tims"]);
        t("Unauthorized", Metadata, &["tims", "default"]);
        t("Unauthorized", N, &["humans"]);
        t("Unauthorized", Metadata, &["humans", "default"]);
    }

    #[test]
    fn checker() {
        audit_levels(&[]);
        let rr = [RequestReceived];
        let panic_only = [RequestReceived, ResponseStarted, ResponseComplete];
        for req in ["namespaced", "cluster", "nonResource"] {
            check(
                req,
                Request,
                &[],
                &rr,
                &["omit RequestReceived", "getPods", "default"],
            );
            check(
                req,
                Request,
                &[],
                &panic_only,
                &["only audit panic", "getPods", "default"],
            );
        }
    }

    #[test]
    fn checker_policy_omit_stages() {
        let ps = [RequestReceived, ResponseStarted];
        audit_levels(&ps);
        let all3 = [RequestReceived, ResponseStarted, ResponseComplete];
        for req in ["namespaced", "cluster"] {
            check(
                req,
                Request,
                &ps,
                &ps,
                &["omit RequestReceived", "getPods", "default"],
            );
            check(
                req,
                Request,
                &ps,
                &all3,
                &["only audit panic", "getPods", "default"],
            );
        }
        check(
            "nonResource",
            Metadata,
            &ps,
            &ps,
            &["default", "omit RequestReceived", "getPods"],
        );
        check(
            "nonResource",
            Request,
            &ps,
            &all3,
            &["only audit panic", "getPods", "default"],
        );
    }

    #[test]
    fn union_stages() {
        let set = |s: &[Stage]| s.iter().copied().collect::<Stages>();
        let cases: [(&[Stage], &[Stage], &[Stage]); 7] = [
            (&[], &[], &[]),
            (&[RequestReceived], &[], &[RequestReceived]),
            (&[RequestReceived], &[RequestReceived], &[RequestReceived]),
            (
                &[RequestReceived],
                &[ResponseStarted],
                &[RequestReceived, ResponseStarted],
            ),
            (
                &[RequestReceived, RequestReceived],
                &[RequestReceived, RequestReceived],
                &[RequestReceived],
            ),
            (
                &[RequestReceived, ResponseStarted],
                &[Panic, RequestReceived],
                &[RequestReceived, ResponseStarted, Panic],
            ),
            (&[], &[RequestReceived], &[RequestReceived]),
        ];
        for (a, b, want) in cases {
            let got = set(a).union(set(b));
            assert_eq!(got, set(want));
            assert_eq!(
                got.iter().count(),
                want.iter().collect::<std::collections::BTreeSet<_>>().len()
            );
        }
    }

    #[test]
    fn omit_managed_fields() {
        let a = Attributes {
            verb: "get".into(),
            ..Default::default()
        };
        let cases = [
            ("", "", false),
            ("omitManagedFields: true\n", "", true),
            (
                "omitManagedFields: true\n",
                "  omitManagedFields: false\n",
                false,
            ),
            (
                "omitManagedFields: false\n",
                "  omitManagedFields: true\n",
                true,
            ),
        ];
        for (global, rule, want) in cases {
            let text = format!(
                "apiVersion: audit.k8s.io/v1\nkind: Policy\n{global}rules:\n- level: RequestResponse\n  verbs: [get]\n{rule}"
            );
            let p = Policy::parse(&text).unwrap();
            assert_eq!(p.evaluate(&tim(), &a).omit_managed_fields, want, "{text}");
        }
    }

    /// `*/status` matches every status subresource of the rule's group (compared exactly).
    #[test]
    fn wildcard_subresource() {
        let p = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  verbs: [update]\n  resources: [{group: rbac.authorization.k8s.io, resources: [\"*/status\"]}]\n",
        )
        .unwrap();
        let a = Attributes {
            user: tim(),
            verb: "update".into(),
            api_group: "rbac.authorization.k8s.io".into(),
            resource: "clusterroles".into(),
            subresource: "status".into(),
            name: "somerole".into(),
            ..Default::default()
        };
        assert_eq!(p.evaluate(&tim(), &a).level, Request);
        let other = Attributes {
            subresource: "scale".into(),
            ..a.clone()
        };
        assert_eq!(p.evaluate(&tim(), &other).level, Level::None);
        let other_group = Attributes {
            api_group: "apps".into(),
            ..a.clone()
        };
        assert_eq!(p.evaluate(&tim(), &other_group).level, Level::None);
    }

    /// The Secrets rule of the documented example policy: Metadata for core secrets, whatever
    /// the verb; other groups' resources named secrets are not matched.
    #[test]
    fn secrets_at_metadata() {
        let p = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [\"RequestReceived\"]\nrules:\n  - level: Metadata\n    resources:\n    - group: \"\"\n      resources: [\"secrets\", \"configmaps\"]\n  - level: RequestResponse\n",
        )
        .unwrap();
        let a = Attributes {
            user: tim(),
            verb: "list".into(),
            namespace: "prod".into(),
            resource: "secrets".into(),
            ..Default::default()
        };
        let c = p.evaluate(&tim(), &a);
        assert_eq!(
            (c.level, c.omit_stages),
            (Metadata, Stages::NONE.with(RequestReceived))
        );
        let other_group = Attributes {
            api_group: "example.com".into(),
            ..a
        };
        assert_eq!(p.evaluate(&tim(), &other_group).level, RequestResponse);
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
        let cases = [
            ("", "the file is empty"),
            ("rules:\n- level: Metadata\n", "apiVersion and kind are required"),
            ("apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: Metadata\n", "no kind \"Policy\" is registered for version \"audit.k8s.io/v1beta1\""),
            (&format!("{head}rules: []\n"), "loaded illegal policy with 0 rules"),
            (head, "loaded illegal policy with 0 rules"),
            (&format!("{head}rules:\n- verbs: [get]\n"), "rules[0].level: Required value"),
            (&format!("{head}rules:\n- level: Everything\n"), "rules[0].level: Unsupported value: \"Everything\": supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\""),
            (&format!("{head}rules:\n- level: Metadata\n  nonResourceURLs: [metrics]\n"), "rules[0].nonResourceURLs[0]: Invalid value: \"metrics\": non-resource URL rules must begin with a '/' character"),
            (&format!("{head}rules:\n- level: Metadata\n  nonResourceURLs: [\"/a*/b\"]\n"), "rules[0].nonResourceURLs[0]: Invalid value: \"/a*/b\": non-resource URL wildcards '*' must be the final character of the rule"),
            (&format!("{head}rules:\n- level: Metadata\n  nonResourceURLs: [/metrics]\n  namespaces: [prod]\n"), "rules[0].nonResourceURLs: Invalid value: []string{\"/metrics\"}: rules cannot apply to both regular resources and non-resource URLs"),
            (&format!("{head}rules:\n- level: Metadata\n  resources: [{{group: rbac.authorization.k8s.io/v1}}]\n"), "rules[0].resources.group: Invalid value: \"rbac.authorization.k8s.io/v1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            // `*` is no wildcard for groups here, unlike in RBAC: refused as kube-apiserver refuses it.
            (&format!("{head}rules:\n- level: Metadata\n  resources: [{{group: \"*\"}}]\n"), "rules[0].resources.group: Invalid value: \"*\": a lowercase RFC 1123 subdomain"),
            (&format!("{head}rules:\n- level: Metadata\n  resources: [{{resourceNames: [x]}}]\n"), "rules[0].resources.resourceNames: Invalid value: []string{\"x\"}: using resourceNames requires at least one resource"),
            (&format!("{head}omitStages: [Done]\nrules:\n- level: Metadata\n  omitStages: [RequestReceived, Later]\n"), "omitStages[0]: Invalid value: \"Done\": allowed stages are RequestReceived,ResponseStarted,ResponseComplete,Panic; rules[0].omitStages[1]: Invalid value: \"Later\""),
        ];
        for (text, want) in cases {
            let err = Policy::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}\n got: {err}\nwant: {want}");
        }
        // Everything valid at once, metadata included.
        Policy::parse(&format!("{head}metadata: {{name: p}}\nomitManagedFields: true\nrules:\n- level: None\n  users: [a]\n  userGroups: [b]\n  verbs: [get]\n  resources: [{{group: apps, resources: [\"*\"], resourceNames: [x]}}]\n  namespaces: [\"\", prod]\n  omitStages: [Panic]\n  omitManagedFields: false\n- level: Metadata\n  nonResourceURLs: [\"*\", \"/healthz*\"]\n")).unwrap();
    }

    /// Unknown fields are named and left out, as kube-apiserver's lenient decoding leaves them
    /// out after its strict one failed; the policy is read without them.
    #[test]
    fn unknown_fields_are_warnings() {
        let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
        let p = Policy::parse(&format!(
            "{head}bogus: 1\nrules:\n- level: Metadata\n  levle: None\n  resources: [{{group: \"\", resource: [pods]}}]\n"
        ))
        .unwrap();
        assert_eq!(
            p.warnings(),
            [
                r#"unknown field "bogus""#,
                r#"unknown field "rules[0].levle""#,
                r#"unknown field "rules[0].resources[0].resource""#
            ]
        );
        assert_eq!(p.evaluate(&tim(), &attrs("namespaced")).level, Metadata);
        assert!(Policy::parse(&format!("{head}rules:\n- level: None\n"))
            .unwrap()
            .warnings()
            .is_empty());
        // A rule whose level is misspelt has none: still invalid.
        let e = Policy::parse(&format!("{head}rules:\n- levle: None\n")).unwrap_err();
        assert!(
            e.to_string().contains("rules[0].level: Required value"),
            "{e}"
        );
        // A repeated key: the last value wins, with go-yaml's strict words as the warning.
        let p = Policy::parse(&format!(
            "{head}rules:\n  - level: Metadata\n    level: None\n"
        ))
        .unwrap();
        assert_eq!(p.warnings(), [r#"line 5: key "level" already set in map"#]);
        assert_eq!(p.evaluate(&tim(), &attrs("namespaced")).level, Level::None);
    }

    #[test]
    fn path_matching() {
        assert!(path_matches("/anything", "*"));
        assert!(path_matches("/metrics", "/metrics"));
        assert!(!path_matches("/metrics/x", "/metrics"));
        assert!(path_matches("/healthz/ready", "/healthz*"));
        assert!(path_matches("/healthz", "/healthz*"));
        assert!(!path_matches("/health", "/healthz*"));
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policy.yaml");
        std::fs::write(
            &p,
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n",
        )
        .unwrap();
        assert_eq!(Policy::load(&p).unwrap().rule_count(), 1);
        let missing = Policy::load(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("cannot read audit policy "),
            "{missing}"
        );
    }
}
