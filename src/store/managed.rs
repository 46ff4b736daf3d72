//! `metadata.managedFields`: who owns which fields of a Secret, as kube-apiserver records it
//! (structured-merge-diff's field sets in the `FieldsV1` format), and the bookkeeping of
//! non-apply writes ([`record_update`]), which every front end shares: a `keyward.v1` write is
//! recorded as manager `keyward`, a Kubernetes API write under its field manager.
//!
//! A field path is a list of `FieldsV1` keys: `f:<field>` for a struct field or map key,
//! `k:{"uid":"…"}` for an item of a list keyed by `uid` (`ownerReferences`), `v:"…"` for an item
//! of a set (`finalizers`). Fields kube-apiserver never tracks (`apiVersion`, `kind`,
//! `metadata.name`, `namespace`, `uid`, `resourceVersion`, `creationTimestamp`, `managedFields`,
//! …) are never in a set.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use super::model::{normalize, ManagedFieldsEntry, ObjectMeta, Secret, SecretBytes};

/// `fieldsType` of every entry keyward writes.
pub const FIELDS_V1: &str = "FieldsV1";
/// `operation` of a server-side apply.
pub const APPLY: &str = "Apply";
/// `operation` of every other write.
pub const UPDATE: &str = "Update";
/// The API version entries are recorded in.
pub const API_VERSION: &str = "v1";

/// One field path: `FieldsV1` keys from the object's root (`["f:data", "f:k"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<String>);

impl FieldPath {
    /// The path of `keys`.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(keys: I) -> FieldPath {
        FieldPath(keys.into_iter().map(Into::into).collect())
    }

    /// This path with `key` appended.
    pub fn child(&self, key: impl Into<String>) -> FieldPath {
        let mut v = self.0.clone();
        v.push(key.into());
        FieldPath(v)
    }

    /// Whether `self` is `other` or lies under it.
    pub fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

/// As kube-apiserver prints a path in conflict messages: `.data.k`,
/// `.metadata.ownerReferences[uid="…"]`, `.metadata.finalizers[="…"]`.
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for key in &self.0 {
            match key.split_at(key.find(':').map_or(0, |i| i + 1)) {
                ("f:", name) => write!(f, ".{name}")?,
                ("v:", value) => write!(f, "[={}]", print_value(value))?,
                ("i:", index) => write!(f, "[{index}]")?,
                ("k:", keys) => {
                    let parsed: Option<Map<String, Value>> = serde_json::from_str(keys).ok();
                    match parsed {
                        Some(m) => {
                            let parts: Vec<String> = m
                                .iter()
                                .map(|(k, v)| format!("{k}={}", print_json(v)))
                                .collect();
                            write!(f, "[{}]", parts.join(","))?
                        }
                        None => write!(f, "[{keys}]")?,
                    }
                }
                _ => write!(f, "{key}")?,
            }
        }
        Ok(())
    }
}

/// structured-merge-diff's `value.ToString` of a JSON-encoded value.
fn print_value(json: &str) -> String {
    serde_json::from_str::<Value>(json).map_or_else(|_| json.to_owned(), |v| print_json(&v))
}

fn print_json(v: &Value) -> String {
    match v {
        // Go's %q; JSON string escaping agrees for everything a field path holds.
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// A set of field paths (structured-merge-diff's `fieldpath.Set`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<FieldPath>);

impl FieldSet {
    /// No field.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `p` is in the set.
    pub fn contains(&self, p: &FieldPath) -> bool {
        self.0.contains(p)
    }

    /// Adds `p`.
    pub fn insert(&mut self, p: FieldPath) {
        self.0.insert(p);
    }

    /// Paths in either.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    /// Paths in `self` but not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    /// Paths in both.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// Iterates the paths in order.
    pub fn iter(&self) -> impl Iterator<Item = &FieldPath> {
        self.0.iter()
    }

    /// The set without the fields kube-apiserver never tracks.
    pub fn stripped(self) -> FieldSet {
        FieldSet(self.0.into_iter().filter(|p| !is_untracked(p)).collect())
    }

    /// The `FieldsV1` trie: each key an object, `".": {}` marking a member that also has
    /// members below it.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for p in &self.0 {
            let mut node = &mut root;
            for key in &p.0 {
                node = node
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("FieldsV1 nodes are objects");
            }
            // A member: marked with "." if other members lie below it (set once they appear).
            node.insert(".".into(), Value::Object(Map::new()));
        }
        // Leaves carry no "."; only members with children keep it.
        fn tidy(node: &mut Map<String, Value>) {
            let has_children = node.keys().any(|k| k != ".");
            if !has_children {
                node.shift_remove(".");
            }
            for (k, v) in node.iter_mut() {
                if k != "." {
                    if let Value::Object(m) = v {
                        tidy(m);
                    }
                }
            }
        }
        for v in root.values_mut() {
            if let Value::Object(m) = v {
                tidy(m);
            }
        }
        Value::Object(root)
    }

    /// Reads a `FieldsV1` trie (`None` or a non-object: the empty set).
    pub fn from_fields_v1(v: Option<&Value>) -> FieldSet {
        fn walk(node: &Map<String, Value>, at: &FieldPath, out: &mut FieldSet) {
            for (k, v) in node {
                if k == "." {
                    if !at.0.is_empty() {
                        out.insert(at.clone());
                    }
                    continue;
                }
                let p = at.child(k.clone());
                match v {
                    Value::Object(m) if !m.is_empty() => walk(m, &p, out),
                    _ => out.insert(p),
                }
            }
        }
        let mut out = FieldSet::new();
        if let Some(Value::Object(m)) = v {
            walk(m, &FieldPath::default(), &mut out);
        }
        out
    }
}

/// Whether kube-apiserver leaves `p` out of every field set (its `stripMeta`).
fn is_untracked(p: &FieldPath) -> bool {
    is_untracked_keys(&p.0)
}

/// [`is_untracked`] of a path given as its keys.
fn is_untracked_keys<S: AsRef<str>>(keys: &[S]) -> bool {
    match keys {
        [] => true,
        [f] => matches!(f.as_ref(), "f:apiVersion" | "f:kind" | "f:metadata"),
        [m, f, ..] if m.as_ref() == "f:metadata" => matches!(
            f.as_ref(),
            "f:name"
                | "f:namespace"
                | "f:creationTimestamp"
                | "f:selfLink"
                | "f:uid"
                | "f:clusterName"
                | "f:generation"
                | "f:managedFields"
                | "f:resourceVersion"
                | "f:deletionTimestamp"
        ),
        _ => false,
    }
}

/// What the fields of a Secret's JSON hold, for comparing two versions: each tracked leaf
/// with its value, and each present container (`data`, `metadata.labels`, ...) as `None`.
pub type Flat = BTreeMap<FieldPath, Option<Value>>;

/// The `FieldsV1` key of an `ownerReferences` item (`k:{"uid":"…"}`).
pub fn owner_key(uid: &str) -> String {
    format!("k:{}", serde_json::json!({ "uid": uid }))
}

/// The `FieldsV1` key of a `finalizers` item (`v:"…"`).
pub fn set_key(value: &str) -> String {
    format!("v:{}", Value::String(value.to_owned()))
}

/// Flattens a Secret's JSON (stored form or request form) for [`compare`]: the tracked leaves
/// with their values, and the containers present (non-empty maps and lists).
pub fn flatten(obj: &Value) -> Flat {
    let mut out = Flat::new();
    let Some(top) = obj.as_object() else {
        return out;
    };
    let root = FieldPath::default();
    for (k, v) in top {
        let p = root.child(format!("f:{k}"));
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if let Some(meta) = v.as_object() {
                    flatten_meta(meta, &p, &mut out);
                }
            }
            "data" | "stringData" => flatten_map(v, &p, &mut out),
            _ if !v.is_null() => {
                out.insert(p, Some(v.clone()));
            }
            _ => {}
        }
    }
    out.retain(|p, _| !is_untracked(p));
    out
}

fn flatten_map(v: &Value, p: &FieldPath, out: &mut Flat) {
    if let Some(m) = v.as_object() {
        if m.is_empty() {
            return;
        }
        out.insert(p.clone(), None);
        for (k, v) in m {
            out.insert(p.child(format!("f:{k}")), Some(v.clone()));
        }
    }
}

fn flatten_meta(meta: &Map<String, Value>, at: &FieldPath, out: &mut Flat) {
    for (k, v) in meta {
        let p = at.child(format!("f:{k}"));
        match k.as_str() {
            "labels" | "annotations" => flatten_map(v, &p, out),
            "ownerReferences" => {
                if let Some(items) = v.as_array().filter(|a| !a.is_empty()) {
                    out.insert(p.clone(), None);
                    for item in items {
                        let uid = item.get("uid").and_then(Value::as_str).unwrap_or_default();
                        out.insert(p.child(owner_key(uid)), Some(item.clone()));
                    }
                }
            }
            "finalizers" => {
                if let Some(items) = v.as_array().filter(|a| !a.is_empty()) {
                    out.insert(p.clone(), None);
                    for item in items {
                        let s = item.as_str().unwrap_or_default();
                        out.insert(p.child(set_key(s)), Some(Value::Null));
                    }
                }
            }
            _ if v.is_null() => {}
            _ if v.as_str() == Some("") => {}
            _ => {
                out.insert(p, Some(v.clone()));
            }
        }
    }
}

/// What changed between two flattened versions (structured-merge-diff's `Comparison`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Present only in the new version.
    pub added: FieldSet,
    /// Present in both with different values.
    pub modified: FieldSet,
    /// Present only in the old version.
    pub removed: FieldSet,
}

impl Comparison {
    /// Added and modified fields: what the write set.
    pub fn changed(&self) -> FieldSet {
        self.added.union(&self.modified)
    }
}

/// Compares two flattened versions.
pub fn compare(old: &Flat, new: &Flat) -> Comparison {
    let mut c = Comparison::default();
    for (p, v) in new {
        match old.get(p) {
            None => c.added.insert(p.clone()),
            Some(o) if o != v => c.modified.insert(p.clone()),
            Some(_) => {}
        }
    }
    for p in old.keys() {
        if !new.contains_key(p) {
            c.removed.insert(p.clone());
        }
    }
    c
}

/// Who a manager is: kube-apiserver tells managers apart by name, operation, subresource and,
/// for `Update`, API version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManagerId {
    /// `manager`.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `apiVersion` (empty for `Apply`).
    pub api_version: String,
    /// `subresource`.
    pub subresource: String,
}

impl ManagerId {
    /// The identity of `manager` writing with `operation` in `v1`.
    pub fn new(manager: &str, operation: &str) -> ManagerId {
        ManagerId {
            manager: manager.to_owned(),
            operation: operation.to_owned(),
            api_version: if operation == APPLY {
                String::new()
            } else {
                API_VERSION.to_owned()
            },
            subresource: String::new(),
        }
    }

    /// As kube-apiserver names the manager in a conflict: `"kubectl"`, or
    /// `"kubectl-client-side-apply" using v1` for an `Update` manager.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == UPDATE {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// One manager's fields and last write time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// What it owns.
    pub fields: FieldSet,
    /// `apiVersion` the entry records.
    pub api_version: String,
    /// RFC 3339 time of its last change.
    pub time: String,
}

/// Every manager of an object.
pub type Managers = BTreeMap<ManagerId, Managed>;

/// Reads `managedFields` entries (fields kube-apiserver never tracks are dropped; two entries
/// of one manager are merged).
pub fn decode(entries: &[ManagedFieldsEntry]) -> Managers {
    let mut out = Managers::new();
    for e in entries {
        let id = ManagerId {
            manager: e.manager.clone(),
            operation: e.operation.clone(),
            api_version: if e.operation == APPLY {
                String::new()
            } else {
                e.api_version.clone()
            },
            subresource: e.subresource.clone(),
        };
        let fields = FieldSet::from_fields_v1(e.fields_v1.as_ref()).stripped();
        let m = out.entry(id).or_insert_with(|| Managed {
            fields: FieldSet::new(),
            api_version: e.api_version.clone(),
            time: e.time.clone(),
        });
        m.fields = m.fields.union(&fields);
        m.time = m.time.clone().max(e.time.clone());
    }
    out
}

/// Writes managers as `managedFields` entries in kube-apiserver's order (operation, time,
/// manager, API version, subresource), dropping managers that own nothing.
pub fn encode(managers: &Managers) -> Vec<ManagedFieldsEntry> {
    let mut out: Vec<ManagedFieldsEntry> = managers
        .iter()
        .filter(|(_, m)| !m.fields.is_empty())
        .map(|(id, m)| ManagedFieldsEntry {
            manager: id.manager.clone(),
            operation: id.operation.clone(),
            api_version: m.api_version.clone(),
            time: m.time.clone(),
            fields_type: FIELDS_V1.to_owned(),
            fields_v1: Some(m.fields.to_fields_v1()),
            subresource: id.subresource.clone(),
        })
        .collect();
    out.sort_by(|p, q| {
        (
            &p.operation,
            &p.time,
            &p.manager,
            &p.api_version,
            &p.subresource,
        )
            .cmp(&(
                &q.operation,
                &q.time,
                &q.manager,
                &q.api_version,
                &q.subresource,
            ))
    });
    out
}

/// A Secret's JSON in stored form (`stringData` folded into `data`, type defaulted) for
/// comparing versions; `None` is an absent object.
pub fn stored_json(s: Option<&Secret>) -> Value {
    match s {
        None => Value::Object(Map::new()),
        Some(s) => {
            let mut s = s.clone();
            normalize(&mut s);
            s.metadata.managed_fields.clear();
            serde_json::to_value(&s).unwrap_or(Value::Null)
        }
    }
}

/// `compare(&flatten(&stored_json(old)), &flatten(&stored_json(Some(new))))` without turning
/// the values into JSON: everything but `data` is flattened as JSON (it is small), and `data`
/// (after `stringData` is folded in) is compared value by value, as `flatten` would.
fn compare_stored(old: Option<&Secret>, new: &Secret) -> Comparison {
    let mut cmp = match old {
        // The usual write changes only values: nothing else to flatten.
        Some(old) if same_tracked_fields_but_data(old, new) => Comparison::default(),
        _ => compare(&flatten_without_data(old), &flatten_without_data(Some(new))),
    };
    let empty = BTreeMap::new();
    let old_data = old.map_or(Cow::Borrowed(&empty), stored_data);
    let new_data = stored_data(new);
    let container = FieldPath::new(["f:data"]);
    match (old_data.is_empty(), new_data.is_empty()) {
        (true, false) => cmp.added.insert(container.clone()),
        (false, true) => cmp.removed.insert(container.clone()),
        _ => {}
    }
    for (k, v) in new_data.iter() {
        match old_data.get(k) {
            None => cmp.added.insert(container.child(format!("f:{k}"))),
            Some(o) if o != v => cmp.modified.insert(container.child(format!("f:{k}"))),
            Some(_) => {}
        }
    }
    for k in old_data.keys() {
        if !new_data.contains_key(k) {
            cmp.removed.insert(container.child(format!("f:{k}")));
        }
    }
    cmp
}

/// Whether every field [`flatten_without_data`] reads (after [`normalize`]) is equal in `a` and
/// `b`, so that their flattened forms are equal. The fields it never tracks (`name`,
/// `namespace`, `uid`, `resourceVersion`, `creationTimestamp`, `deletionTimestamp`,
/// `managedFields`, `apiVersion`, `kind`) may differ.
fn same_tracked_fields_but_data(a: &Secret, b: &Secret) -> bool {
    fn tracked(s: &Secret) -> impl PartialEq + '_ {
        // Named in full, so that a field added to the model must be placed here.
        let Secret {
            api_version: _,
            kind: _,
            metadata,
            data: _,
            string_data: _,
            type_,
            immutable,
        } = s;
        let ObjectMeta {
            name: _,
            generate_name,
            namespace: _,
            uid: _,
            resource_version: _,
            creation_timestamp: _,
            deletion_timestamp: _,
            deletion_grace_period_seconds,
            labels,
            annotations,
            owner_references,
            finalizers,
            managed_fields: _,
        } = metadata;
        let type_ = if type_.is_empty() {
            super::model::OPAQUE
        } else {
            type_.as_str()
        };
        (
            (
                type_,
                immutable,
                generate_name,
                deletion_grace_period_seconds,
            ),
            (labels, annotations, owner_references, finalizers),
        )
    }
    tracked(a) == tracked(b)
}

/// [`flatten`] of [`stored_json`] for every field but `data` and `stringData`.
fn flatten_without_data(s: Option<&Secret>) -> Flat {
    let Some(s) = s else {
        return flatten(&stored_json(None));
    };
    let m = &s.metadata;
    let mut shallow = Secret {
        api_version: s.api_version.clone(),
        kind: s.kind.clone(),
        metadata: ObjectMeta {
            name: m.name.clone(),
            generate_name: m.generate_name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            creation_timestamp: m.creation_timestamp.clone(),
            deletion_timestamp: m.deletion_timestamp.clone(),
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            labels: m.labels.clone(),
            annotations: m.annotations.clone(),
            owner_references: m.owner_references.clone(),
            finalizers: m.finalizers.clone(),
            managed_fields: Vec::new(),
        },
        data: BTreeMap::new(),
        string_data: BTreeMap::new(),
        type_: s.type_.clone(),
        immutable: s.immutable,
    };
    normalize(&mut shallow);
    flatten(&serde_json::to_value(&shallow).unwrap_or(Value::Null))
}

/// `data` as [`stored_json`] holds it: with `stringData` folded in ([`normalize`]).
fn stored_data(s: &Secret) -> Cow<'_, BTreeMap<String, SecretBytes>> {
    if s.string_data.is_empty() {
        Cow::Borrowed(&s.data)
    } else {
        let mut folded = Secret {
            data: s.data.clone(),
            string_data: s.string_data.clone(),
            ..Secret::default()
        };
        normalize(&mut folded);
        Cow::Owned(folded.data)
    }
}

/// Records a non-apply write (create, update, patch) by `manager` at `now` in
/// `new.metadata.managedFields`, as kube-apiserver's field manager does:
///
/// - the managers start from `new`'s entries if the writer set any (a client that sets
///   `managedFields` replaces them), else from `old`'s (a client unaware of them does not
///   drop them);
/// - fields the write added or changed move to `manager`'s `Update` entry (merged with its
///   earlier one, time refreshed); fields it removed leave every manager;
/// - managers left owning nothing are dropped. If that leaves no entry at all, the result is
///   [`none_owned`], which the store writes as no `managedFields` (and tells from a `keyward.v1`
///   write, which carries none and is recorded as manager `keyward`);
/// - `new` holding one empty entry (or `managedFields: []`, which the Kubernetes API decodes
///   to it) resets them: the managers start from nothing.
pub fn record_update(old: Option<&Secret>, new: &mut Secret, manager: &str, now: &str) {
    if new.metadata.managed_fields.is_empty() {
        if let Some(entries) = old.and_then(|old| same_owner(old, new, manager, now)) {
            new.metadata.managed_fields = entries;
            return;
        }
    }
    record_update_in_full(old, new, manager, now);
}

/// [`record_update`]'s answer without decoding and encoding field sets, for the usual write: a
/// writer that does not send `managedFields` changes fields its one `Update` entry already owns
/// and removes none. The answer is then that entry, its time refreshed if anything changed. It
/// holds only if the entry's `fieldsV1` is exactly what encoding its field set gives
/// ([`canonical_fields_v1`]); `None` whenever any of this is not so.
fn same_owner(
    old: &Secret,
    new: &Secret,
    manager: &str,
    now: &str,
) -> Option<Vec<ManagedFieldsEntry>> {
    let [entry] = old.metadata.managed_fields.as_slice() else {
        return None;
    };
    let fits = entry.manager == manager
        && entry.operation == UPDATE
        && entry.api_version == API_VERSION
        && entry.subresource.is_empty()
        && entry.fields_type == FIELDS_V1;
    let Some(Value::Object(root)) = entry.fields_v1.as_ref().filter(|_| fits) else {
        return None;
    };
    if !canonical_fields_v1(root) {
        return None;
    }
    let cmp = compare_stored(Some(old), new);
    if !cmp.removed.is_empty() {
        return None;
    }
    let mut changed = cmp.added.iter().chain(cmp.modified.iter()).peekable();
    let refreshed = changed.peek().is_some();
    if !changed.all(|p| owns(root, &p.0)) {
        return None;
    }
    let mut entry = entry.clone();
    if refreshed {
        now.clone_into(&mut entry.time);
    }
    Some(vec![entry])
}

/// Whether `root` is a `FieldsV1` trie that [`FieldSet::to_fields_v1`] gives back unchanged
/// from its own (stripped) field set, and owns at least one field: every node an object; `"."`
/// (an empty object) only beside other keys, and never at the root; no field that
/// kube-apiserver leaves out of field sets.
fn canonical_fields_v1(root: &Map<String, Value>) -> bool {
    fn node<'a>(m: &'a Map<String, Value>, at: &mut Vec<&'a str>) -> bool {
        if m.is_empty() {
            return !is_untracked_keys(at);
        }
        if let Some(dot) = m.get(".") {
            let empty = matches!(dot, Value::Object(d) if d.is_empty());
            if !empty || m.len() == 1 || is_untracked_keys(at) {
                return false;
            }
        }
        children(m, at)
    }
    fn children<'a>(m: &'a Map<String, Value>, at: &mut Vec<&'a str>) -> bool {
        m.iter().filter(|(k, _)| *k != ".").all(|(k, v)| {
            let Value::Object(child) = v else {
                return false;
            };
            at.push(k);
            let ok = node(child, at);
            at.pop();
            ok
        })
    }
    !root.is_empty() && !root.contains_key(".") && children(root, &mut Vec::new())
}

/// Whether the field at `path` is a member of the canonical trie `root`: its node is a leaf
/// or carries `"."`.
fn owns(root: &Map<String, Value>, path: &[String]) -> bool {
    let mut node = root;
    for key in path {
        match node.get(key) {
            Some(Value::Object(m)) => node = m,
            _ => return false,
        }
    }
    !path.is_empty() && (node.is_empty() || node.contains_key("."))
}

/// [`record_update`] by decoding every entry's field set, moving the changed fields and
/// encoding the entries again.
fn record_update_in_full(old: Option<&Secret>, new: &mut Secret, manager: &str, now: &str) {
    let given = &new.metadata.managed_fields;
    let mut managers = if is_none_owned(given) {
        Managers::new()
    } else if given.is_empty() {
        old.map(|o| decode(&o.metadata.managed_fields))
            .unwrap_or_default()
    } else {
        decode(given)
    };
    let cmp = compare_stored(old, new);
    let touched = cmp.changed().union(&cmp.removed);
    for m in managers.values_mut() {
        m.fields = m.fields.difference(&touched);
    }
    let changed = cmp.changed();
    let id = ManagerId::new(manager, UPDATE);
    if !changed.is_empty() {
        let entry = managers.entry(id.clone()).or_insert_with(|| Managed {
            fields: FieldSet::new(),
            api_version: API_VERSION.to_owned(),
            time: now.to_owned(),
        });
        entry.fields = entry.fields.union(&changed);
        entry.time = now.to_owned();
    }
    cap_update_managers(&mut managers);
    new.metadata.managed_fields = recorded(encode(&managers));
}

/// Most `Update` managers an object keeps (apimachinery's `DefaultMaxUpdateManagers`).
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The manager the oldest `Update` managers beyond [`MAX_UPDATE_MANAGERS`] are merged into.
pub const ANCIENT_CHANGES: &str = "ancient-changes";

/// Caps the `Update` managers at [`MAX_UPDATE_MANAGERS`] after a non-apply write, as
/// kube-apiserver's `capManagersManager` does: oldest first (by the second of their time,
/// then by identity), the first manager of each API version stays until a second of that
/// version comes, which moves both into one [`ANCIENT_CHANGES`] entry of that version (the
/// later time kept); each further one of the version is merged into it, until few enough are
/// left. Managers that own nothing have been dropped already.
fn cap_update_managers(managers: &mut Managers) {
    let mut updaters: Vec<ManagerId> = managers
        .iter()
        .filter(|(id, m)| id.operation != APPLY && !m.fields.is_empty())
        .map(|(id, _)| id.clone())
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    let seconds = |id: &ManagerId| {
        managers
            .get(id)
            .and_then(|m| crate::go_time::parse_rfc3339(&m.time).ok())
            .map_or(0, |t| t.unix)
    };
    let mut keyed: Vec<(i64, String, ManagerId)> = updaters
        .drain(..)
        .map(|id| (seconds(&id), go_identifier(&id), id))
        .collect();
    keyed.sort();
    let mut first_of_version: BTreeMap<String, ManagerId> = BTreeMap::new();
    let mut length = keyed.len();
    for (_, _, id) in keyed {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let Some(m) = managers.get(&id) else { continue };
        let (version, time, fields) = (m.api_version.clone(), m.time.clone(), m.fields.clone());
        let bucket = ManagerId {
            manager: ANCIENT_CHANGES.to_owned(),
            operation: UPDATE.to_owned(),
            api_version: version.clone(),
            subresource: String::new(),
        };
        let Some(first) = first_of_version.get(&version) else {
            first_of_version.insert(version, id);
            continue;
        };
        if !managers.contains_key(&bucket) {
            if let Some(moved) = managers.remove(first) {
                managers.insert(bucket.clone(), moved);
            }
        }
        if let Some(b) = managers.get_mut(&bucket) {
            b.fields = fields.union(&b.fields);
            b.time = time;
        }
        // As kube-apiserver: removed even when it is the bucket itself.
        managers.remove(&id);
        length -= 1;
    }
}

/// apimachinery's `BuildManagerIdentifier`: the entry without its fields and time, as Go's
/// JSON in its field order (`apiVersion` left out for `Apply`, `subresource` when empty); what
/// it sorts managers of the same second by.
fn go_identifier(id: &ManagerId) -> String {
    let quote = |s: &str| crate::manifest::gojson::compact(&Value::String(s.to_owned()));
    let mut out = format!(
        "{{\"manager\":{},\"operation\":{}",
        quote(&id.manager),
        quote(&id.operation)
    );
    if !id.api_version.is_empty() {
        out.push_str(&format!(",\"apiVersion\":{}", quote(&id.api_version)));
    }
    if !id.subresource.is_empty() {
        out.push_str(&format!(",\"subresource\":{}", quote(&id.subresource)));
    }
    out.push('}');
    out
}

/// What a writer that records `managedFields` itself (the Kubernetes API) hands the store when
/// no manager owns anything: one empty entry, the value kube-apiserver reads as "reset".
/// kube-apiserver then stores no `managedFields`, and so does the store; an empty list instead
/// is a `keyward.v1` write, which the store records as manager `keyward`.
pub fn none_owned() -> Vec<ManagedFieldsEntry> {
    vec![ManagedFieldsEntry::default()]
}

/// Whether `entries` is [`none_owned`].
pub fn is_none_owned(entries: &[ManagedFieldsEntry]) -> bool {
    matches!(entries, [only] if *only == ManagedFieldsEntry::default())
}

/// `entries` as a recording writer hands them to the store: [`none_owned`] if empty.
pub fn recorded(entries: Vec<ManagedFieldsEntry>) -> Vec<ManagedFieldsEntry> {
    if entries.is_empty() {
        none_owned()
    } else {
        entries
    }
}

/// `managedFields` equal but for their times (kube-apiserver does not write an object whose
/// only change is a managedFields timestamp).
pub fn same_but_times(a: &[ManagedFieldsEntry], b: &[ManagedFieldsEntry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let mut x = x.clone();
            x.time.clone_from(&y.time);
            x == *y
        })
}

#[cfg(test)]
mod tests;
