//! Reading RBAC manifests: YAML (several `---` documents) or JSON, single objects or lists
//! (`v1 List`, as `kubectl get -o yaml` prints, and the typed `RoleList`, `ClusterRoleList`,
//! `RoleBindingList`, `ClusterRoleBindingList`). Every field is type-checked and unknown fields
//! are refused, naming the field, as kube-apiserver's strict field validation does; the v1
//! defaults (subject and roleRef `apiGroup`) are applied. Semantic checks are in `validate`.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::types::{
    AggregationRule, ClusterRole, ClusterRoleBinding, LabelSelector, LabelSelectorRequirement,
    ObjectMeta, PolicyRule, Role, RoleBinding, RoleRef, SelectorOperator, Subject, API_VERSION,
    GROUP_KIND, GROUP_NAME, USER_KIND,
};

/// Where an object was read: a file (or other named input), the 1-based YAML document, and for
/// an object inside a list, its index in `items`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file (or input) name.
    pub source: String,
    /// The YAML document, from 1.
    pub document: usize,
    /// The index in the list's `items`, for an object read from a list.
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

/// One thing wrong with a policy: where, which object, which field, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the object was read.
    pub location: Location,
    /// The object, e.g. `RoleBinding "prod/app"`, when its kind is known.
    pub object: Option<String>,
    /// The field's JSON path, e.g. `subjects[0].apiGroup`; "" for the whole document.
    pub field: String,
    /// What is wrong, worded as kube-apiserver's validation words it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// A field error found while reading or validating one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldIssue {
    pub field: String,
    pub message: String,
}

impl FieldIssue {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The RBAC object kinds a policy holds.
pub(crate) const KINDS: [&str; 4] = ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"];

/// One RBAC object as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Object {
    Role(Role),
    ClusterRole(ClusterRole),
    RoleBinding(RoleBinding),
    ClusterRoleBinding(ClusterRoleBinding),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Role(_) => "Role",
            Object::ClusterRole(_) => "ClusterRole",
            Object::RoleBinding(_) => "RoleBinding",
            Object::ClusterRoleBinding(_) => "ClusterRoleBinding",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Role(o) => &o.metadata,
            Object::ClusterRole(o) => &o.metadata,
            Object::RoleBinding(o) => &o.metadata,
            Object::ClusterRoleBinding(o) => &o.metadata,
        }
    }
}

/// An object and where it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub location: Location,
    pub object: Object,
}

/// `Kind "ns/name"` or `Kind "name"`, as problems name objects.
pub(crate) fn describe(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name:?}")
    } else {
        format!("{kind} \"{namespace}/{name}\"")
    }
}

/// Reads every object of `text` into `out`; what cannot be read goes to `problems`. `source`
/// names the input in locations.
pub(crate) fn parse_text(
    text: &str,
    source: &str,
    out: &mut Vec<Located>,
    problems: &mut Vec<Problem>,
) {
    use serde::Deserialize;
    // A repeated key would be read as its last value: refused, as kubectl's strict YAML
    // decoding refuses it, so that no reader takes the first value for the one in force.
    for (i, message) in crate::manifest::yaml_keys::repeated_keys_by_document(text) {
        problems.push(Problem {
            location: Location {
                source: source.to_owned(),
                document: i + 1,
                item: None,
            },
            object: None,
            field: String::new(),
            message,
        });
    }
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let location = Location {
            source: source.to_owned(),
            document: i + 1,
            item: None,
        };
        match Value::deserialize(doc) {
            Ok(value) => parse_document(value, location, out, problems),
            Err(e) => {
                problems.push(Problem {
                    location,
                    object: None,
                    field: String::new(),
                    message: format!("not valid YAML or JSON: {e}"),
                });
                // The deserializer cannot resume after a syntax error.
                return;
            }
        }
    }
}

fn problem(location: &Location, object: Option<String>, issue: FieldIssue) -> Problem {
    Problem {
        location: location.clone(),
        object,
        field: issue.field,
        message: issue.message,
    }
}

fn list_item_kind(kind: &str) -> Option<&'static str> {
    KINDS
        .into_iter()
        .find(|k| kind.strip_suffix("List") == Some(*k))
}

fn parse_document(
    value: Value,
    location: Location,
    out: &mut Vec<Located>,
    problems: &mut Vec<Problem>,
) {
    let obj = match value {
        Value::Null => return,
        Value::Object(o) => o,
        other => {
            let msg = format!(
                "a document must be an object (a Kubernetes manifest), not {}",
                json_type(&other)
            );
            problems.push(problem(&location, None, FieldIssue::new("", msg)));
            return;
        }
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == "List" || list_item_kind(kind).is_some() {
        parse_list(obj, location, out, problems);
    } else {
        parse_item(obj, location, None, out, problems);
    }
}

const LIST_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "items"];

fn parse_list(
    obj: Map<String, Value>,
    location: Location,
    out: &mut Vec<Located>,
    problems: &mut Vec<Problem>,
) {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let item_kind = list_item_kind(kind);
    let want_version = if item_kind.is_some() {
        API_VERSION
    } else {
        "v1"
    };
    let mut issues = Vec::new();
    unknown_fields(&obj, "", LIST_FIELDS, &mut issues);
    // kubectl flattens a `List` of any group and version (every object with `items`).
    let any_version = item_kind.is_none()
        && obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty());
    if !any_version {
        check_api_version(&obj, &[want_version], &mut issues);
    }
    let items = match obj.get("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(other) => {
            issues.push(FieldIssue::new(
                "items",
                format!("Invalid value: {}: must be a list", json_type(other)),
            ));
            Vec::new()
        }
    };
    let list_name = Some(kind.to_owned());
    for issue in issues {
        problems.push(problem(&location, list_name.clone(), issue));
    }
    for (i, item) in items.into_iter().enumerate() {
        let item_location = Location {
            item: Some(i),
            ..location.clone()
        };
        match item {
            Value::Object(mut o) => {
                // Items of a typed list (the API's own list responses) may omit their kind.
                if let Some(k) = item_kind {
                    o.entry("kind").or_insert_with(|| Value::from(k));
                    o.entry("apiVersion")
                        .or_insert_with(|| Value::from(API_VERSION));
                }
                parse_item(o, item_location, item_kind, out, problems);
            }
            other => {
                let msg = format!("Invalid value: {}: must be an object", json_type(&other));
                problems.push(problem(&item_location, None, FieldIssue::new("", msg)));
            }
        }
    }
}

fn check_api_version(obj: &Map<String, Value>, supported: &[&str], issues: &mut Vec<FieldIssue>) {
    match obj.get("apiVersion") {
        None | Some(Value::Null) => issues.push(FieldIssue::new("apiVersion", "Required value")),
        Some(Value::String(v)) if supported.contains(&v.as_str()) => {}
        Some(Value::String(v)) => {
            issues.push(FieldIssue::new("apiVersion", not_supported(v, supported)))
        }
        Some(other) => issues.push(not_a_string("apiVersion", other)),
    }
}

/// `Unsupported value: "v": supported values: "a", "b"` (apimachinery `field.NotSupported`).
pub(crate) fn not_supported(value: &str, supported: &[&str]) -> String {
    let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "Unsupported value: {value:?}: supported values: {}",
        quoted.join(", ")
    )
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn not_a_string(field: &str, v: &Value) -> FieldIssue {
    FieldIssue::new(
        field,
        format!("Invalid value: {}: must be a string", json_type(v)),
    )
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Refuses every key of `obj` not in `known`, naming the field.
fn unknown_fields(
    obj: &Map<String, Value>,
    path: &str,
    known: &[&str],
    issues: &mut Vec<FieldIssue>,
) {
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            issues.push(FieldIssue::new(
                path,
                format!(
                    "unknown field {:?} (known fields: {})",
                    join(path, key),
                    known.join(", ")
                ),
            ));
        }
    }
}

/// Reads typed fields of one object, collecting every problem.
struct Reader {
    issues: Vec<FieldIssue>,
}

impl Reader {
    fn object<'v>(
        &mut self,
        v: Option<&'v Value>,
        path: &str,
        known: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        match v {
            None | Some(Value::Null) => None,
            Some(Value::Object(o)) => {
                unknown_fields(o, path, known, &mut self.issues);
                Some(o)
            }
            Some(other) => {
                self.issues.push(FieldIssue::new(
                    path,
                    format!("Invalid value: {}: must be an object", json_type(other)),
                ));
                None
            }
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> String {
        match obj.get(key) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                self.issues.push(not_a_string(&join(path, key), other));
                String::new()
            }
        }
    }

    fn strings(&mut self, obj: &Map<String, Value>, key: &str, path: &str) -> Vec<String> {
        let field = join(path, key);
        match obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, v) in a.iter().enumerate() {
                    match v {
                        Value::String(s) => out.push(s.clone()),
                        other => self
                            .issues
                            .push(not_a_string(&format!("{field}[{i}]"), other)),
                    }
                }
                out
            }
            Some(other) => {
                self.issues.push(FieldIssue::new(
                    field,
                    format!(
                        "Invalid value: {}: must be a list of strings",
                        json_type(other)
                    ),
                ));
                Vec::new()
            }
        }
    }

    fn string_map(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> BTreeMap<String, String> {
        let field = join(path, key);
        let mut out = BTreeMap::new();
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    match v {
                        Value::String(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        other => self
                            .issues
                            .push(not_a_string(&format!("{field}[{k}]"), other)),
                    }
                }
            }
            Some(other) => self.issues.push(FieldIssue::new(
                field,
                format!(
                    "Invalid value: {}: must be a map of strings",
                    json_type(other)
                ),
            )),
        }
        out
    }

    /// Each element of the list `key`, as an object with `known` fields.
    fn objects<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        key: &str,
        path: &str,
        known: &[&str],
    ) -> Vec<(String, &'v Map<String, Value>)> {
        let field = join(path, key);
        match obj.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let p = format!("{field}[{i}]");
                    self.object(Some(v), &p, known).map(|o| (p, o))
                })
                .collect(),
            Some(other) => {
                self.issues.push(FieldIssue::new(
                    field,
                    format!("Invalid value: {}: must be a list", json_type(other)),
                ));
                Vec::new()
            }
        }
    }
}

/// Every field of `ObjectMeta` (`k8s.io/apimachinery/pkg/apis/meta/v1`); only `name`,
/// `namespace`, `generateName`, `labels` and `annotations` are read.
const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];
const ROLE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "rules"];
const CLUSTER_ROLE_FIELDS: &[&str] =
    &["apiVersion", "kind", "metadata", "rules", "aggregationRule"];
const BINDING_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "subjects", "roleRef"];
const RULE_FIELDS: &[&str] = &[
    "apiGroups",
    "nonResourceURLs",
    "resourceNames",
    "resources",
    "verbs",
];
const SUBJECT_FIELDS: &[&str] = &["apiGroup", "kind", "name", "namespace"];
const ROLE_REF_FIELDS: &[&str] = &["apiGroup", "kind", "name"];
const AGGREGATION_FIELDS: &[&str] = &["clusterRoleSelectors"];
const SELECTOR_FIELDS: &[&str] = &["matchExpressions", "matchLabels"];
const REQUIREMENT_FIELDS: &[&str] = &["key", "operator", "values"];

fn parse_item(
    obj: Map<String, Value>,
    location: Location,
    list_kind: Option<&str>,
    out: &mut Vec<Located>,
    problems: &mut Vec<Problem>,
) {
    let mut r = Reader { issues: Vec::new() };
    let kind = r.string(&obj, "kind", "");
    let meta_value = obj.get("metadata");
    let raw_name = meta_value
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let raw_ns = meta_value
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let object_name = (!kind.is_empty()).then(|| describe(&kind, raw_ns, raw_name));
    if let Some(want) = list_kind {
        if kind != want {
            r.issues
                .push(FieldIssue::new("kind", not_supported(&kind, &[want])));
        }
    }
    let known: &[&str] = match kind.as_str() {
        "Role" => ROLE_FIELDS,
        "ClusterRole" => CLUSTER_ROLE_FIELDS,
        "RoleBinding" | "ClusterRoleBinding" => BINDING_FIELDS,
        "" => {
            r.issues.push(FieldIssue::new("kind", "Required value"));
            &[]
        }
        other => {
            let mut supported = KINDS.to_vec();
            supported.push("List");
            let msg = format!(
                "{}; a policy holds only RBAC objects",
                not_supported(other, &supported)
            );
            r.issues.push(FieldIssue::new("kind", msg));
            &[]
        }
    };
    let object = if known.is_empty() {
        None
    } else {
        unknown_fields(&obj, "", known, &mut r.issues);
        check_api_version(&obj, &[API_VERSION], &mut r.issues);
        let metadata = read_meta(&mut r, meta_value);
        Some(match kind.as_str() {
            "Role" => Object::Role(Role {
                metadata,
                rules: read_rules(&mut r, &obj),
            }),
            "ClusterRole" => Object::ClusterRole(ClusterRole {
                metadata,
                rules: read_rules(&mut r, &obj),
                aggregation_rule: read_aggregation(&mut r, &obj),
            }),
            "RoleBinding" => {
                let (subjects, role_ref) = read_binding(&mut r, &obj);
                Object::RoleBinding(RoleBinding {
                    metadata,
                    subjects,
                    role_ref,
                })
            }
            _ => {
                let (subjects, role_ref) = read_binding(&mut r, &obj);
                Object::ClusterRoleBinding(ClusterRoleBinding {
                    metadata,
                    subjects,
                    role_ref,
                })
            }
        })
    };
    if r.issues.is_empty() {
        if let Some(object) = object {
            out.push(Located { location, object });
        }
    } else {
        for issue in r.issues {
            problems.push(problem(&location, object_name.clone(), issue));
        }
    }
}

/// The annotation whose value `"false"` keeps a bootstrap object as the policy writes it.
pub const AUTO_UPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";

fn read_meta(r: &mut Reader, v: Option<&Value>) -> ObjectMeta {
    let Some(m) = r.object(v, "metadata", META_FIELDS) else {
        return ObjectMeta::default();
    };
    let generate_name = r.string(m, "generateName", "metadata");
    let name = r.string(m, "name", "metadata");
    let namespace = r.string(m, "namespace", "metadata");
    let labels = r.string_map(m, "labels", "metadata");
    let annotations = r.string_map(m, "annotations", "metadata");
    let meta = ObjectMeta {
        name,
        namespace,
        labels,
        protected: annotations.get(AUTO_UPDATE_ANNOTATION).map(String::as_str) == Some("false"),
    };
    if meta.name.is_empty() && !generate_name.is_empty() {
        r.issues.push(FieldIssue::new(
            "metadata.generateName",
            "Forbidden: a policy file cannot generate names; set metadata.name",
        ));
    }
    meta
}

fn read_rules(r: &mut Reader, obj: &Map<String, Value>) -> Vec<PolicyRule> {
    r.objects(obj, "rules", "", RULE_FIELDS)
        .into_iter()
        .map(|(p, o)| PolicyRule {
            verbs: r.strings(o, "verbs", &p),
            api_groups: r.strings(o, "apiGroups", &p),
            resources: r.strings(o, "resources", &p),
            resource_names: r.strings(o, "resourceNames", &p),
            non_resource_urls: r.strings(o, "nonResourceURLs", &p),
        })
        .collect()
}

fn read_aggregation(r: &mut Reader, obj: &Map<String, Value>) -> Option<AggregationRule> {
    let agg = r.object(
        obj.get("aggregationRule"),
        "aggregationRule",
        AGGREGATION_FIELDS,
    )?;
    let selectors = r
        .objects(
            agg,
            "clusterRoleSelectors",
            "aggregationRule",
            SELECTOR_FIELDS,
        )
        .into_iter()
        .map(|(p, s)| LabelSelector {
            match_labels: r.string_map(s, "matchLabels", &p),
            match_expressions: r
                .objects(s, "matchExpressions", &p, REQUIREMENT_FIELDS)
                .into_iter()
                .filter_map(|(rp, e)| read_requirement(r, e, &rp))
                .collect(),
        })
        .collect();
    Some(AggregationRule {
        cluster_role_selectors: selectors,
    })
}

fn read_requirement(
    r: &mut Reader,
    e: &Map<String, Value>,
    path: &str,
) -> Option<LabelSelectorRequirement> {
    let key = r.string(e, "key", path);
    let op = r.string(e, "operator", path);
    let values = r.strings(e, "values", path);
    let operator = match op.as_str() {
        "In" => SelectorOperator::In,
        "NotIn" => SelectorOperator::NotIn,
        "Exists" => SelectorOperator::Exists,
        "DoesNotExist" => SelectorOperator::DoesNotExist,
        other => {
            r.issues.push(FieldIssue::new(
                format!("{path}.operator"),
                format!("Invalid value: {other:?}: not a valid selector operator"),
            ));
            return None;
        }
    };
    let field = format!("{path}.values");
    match operator {
        SelectorOperator::In | SelectorOperator::NotIn if values.is_empty() => {
            r.issues.push(FieldIssue::new(
                field,
                "Required value: must be specified when `operator` is 'In' or 'NotIn'",
            ));
        }
        SelectorOperator::Exists | SelectorOperator::DoesNotExist if !values.is_empty() => {
            r.issues.push(FieldIssue::new(
                field,
                "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ));
        }
        _ => {}
    }
    Some(LabelSelectorRequirement {
        key,
        operator,
        values,
    })
}

fn read_binding(r: &mut Reader, obj: &Map<String, Value>) -> (Vec<Subject>, RoleRef) {
    let subjects = r
        .objects(obj, "subjects", "", SUBJECT_FIELDS)
        .into_iter()
        .map(|(p, s)| {
            let kind = r.string(s, "kind", &p);
            let mut api_group = r.string(s, "apiGroup", &p);
            // SetDefaults_Subject (pkg/apis/rbac/v1/defaults.go).
            if api_group.is_empty() && (kind == USER_KIND || kind == GROUP_KIND) {
                api_group = GROUP_NAME.to_owned();
            }
            Subject {
                name: r.string(s, "name", &p),
                namespace: r.string(s, "namespace", &p),
                kind,
                api_group,
            }
        })
        .collect();
    let role_ref = match r.object(obj.get("roleRef"), "roleRef", ROLE_REF_FIELDS) {
        Some(o) => {
            let mut api_group = r.string(o, "apiGroup", "roleRef");
            // SetDefaults_RoleBinding / SetDefaults_ClusterRoleBinding.
            if api_group.is_empty() {
                api_group = GROUP_NAME.to_owned();
            }
            RoleRef {
                api_group,
                kind: r.string(o, "kind", "roleRef"),
                name: r.string(o, "name", "roleRef"),
            }
        }
        None => RoleRef {
            api_group: GROUP_NAME.to_owned(),
            ..RoleRef::default()
        },
    };
    (subjects, role_ref)
}
