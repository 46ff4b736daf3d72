//! Server-side apply and `managedFields`, as kube-apiserver's field manager (structured-merge-diff)
//! does them for a Secret.
//!
//! An apply merges the applied configuration into the live object (maps key by key,
//! `finalizers` as a set, `ownerReferences` by `uid`, scalars replaced), refuses to change a
//! field another manager owns (a conflict) unless `force` moves it, removes the fields this
//! manager applied before, no longer applies and nobody else owns, and records the applied fields
//! as the manager's `Apply` entry. Other writes record `Update` entries
//! ([`crate::store::managed::record_update`]).
//!
//! Secret's `stringData` quirk, as upstream: applying `stringData.k` makes the manager own
//! `f:stringData.f:k` (a field no stored object has) while the value lands in `data.k`; so
//! dropping `k` from a later apply does not remove `data.k`, and a `data.k` owned by another
//! manager is overwritten without a conflict (kubernetes/kubernetes#108008).
//!
//! Applies by the field manager `kubectl` (`kubectl apply --server-side`) also honour the
//! client-side apply annotation, as apimachinery's `lastAppliedManager` and
//! `lastAppliedUpdater` do: a conflict on a field whose live value the annotation still records
//! is no conflict (the field is taken over), and the annotation, if present, becomes the applied
//! configuration.

use serde_json::{Map, Value};

use super::error::ApplyConflict;
use super::objects::{json_kind, secret_from_json, Walk, SECRET};
use super::patch::fold_string_data;
use super::KubeError;
use crate::manifest::{gojson, last_applied};
use crate::store::managed::{
    self, compare, decode, encode, flatten, owner_key, set_key, stored_json, FieldPath, FieldSet,
    Managed, ManagerId, Managers, API_VERSION, APPLY,
};
use crate::store::model::{Secret, MAX_ANNOTATIONS_SIZE, OPAQUE};

/// Server-side apply of `applied` (the request body's JSON) by `manager` to `live` (`None`:
/// the object does not exist and is created). Returns the object to write, its
/// `managedFields` updated. `now` is the RFC 3339 time recorded.
///
/// The result carries `live`'s `resourceVersion` (or the one `applied` names), so that the
/// store's compare-and-swap refuses it if the object changed meanwhile (re-read and apply
/// again). On create, `metadata.name` and `namespace` are `applied`'s (the caller checks them
/// against the URL) and `type` defaults to `Opaque`.
pub fn server_side_apply(
    live: Option<&Secret>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Secret, KubeError> {
    check_applied(applied)?;
    let live_json = stored_json(live);
    let mut base = match live {
        Some(l) => {
            let mut v = serde_json::to_value(l).unwrap_or(Value::Null);
            if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                m.shift_remove("managedFields");
            }
            v
        }
        None => Value::Object(Map::new()),
    };
    merge_applied(&mut base, applied);
    let mut merged = base;

    let applied_set = applied_fields(applied);
    let mut managers: Managers = live
        .map(|l| first_apply_managers(l, now))
        .unwrap_or_default();
    let me = ManagerId::new(manager, APPLY);
    let last = managers.remove(&me);
    // Fields this manager applied before and no longer applies, owned by nobody else: removed.
    if let Some(last) = &last {
        let owned = managers
            .values()
            .fold(applied_set.clone(), |acc, m| acc.union(&m.fields));
        for p in last.fields.difference(&applied_set).iter() {
            if !owned.contains(p) {
                prune(&mut merged, p, &owned);
            }
        }
    }
    let cmp = compare(&flatten(&live_json), &flatten(&merged));
    let changed = cmp.changed();
    let mut conflicts: Vec<(ManagerId, FieldPath)> = Vec::new();
    for (id, m) in &managers {
        for p in m.fields.intersection(&changed).iter() {
            conflicts.push((id.clone(), p.clone()));
        }
    }
    if !conflicts.is_empty() && !force && manager == KUBECTL {
        // kubectl's way from client-side to server-side apply: fields the last-applied
        // annotation still describes as they are are taken over, as if forced.
        if let Some(allowed) = allowed_conflicts_from_last_applied(&live_json) {
            conflicts.retain(|(_, p)| !allowed.contains(p));
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort();
        return Err(KubeError::ApplyConflict {
            conflicts: conflicts
                .into_iter()
                .map(|(id, p)| ApplyConflict {
                    manager: id.describe(),
                    field: p.to_string(),
                })
                .collect(),
        });
    }
    for m in managers.values_mut() {
        // Forced: conflicting fields move to this manager; removed fields leave everyone.
        m.fields = m.fields.difference(&changed).difference(&cmp.removed);
    }
    let object_changed = flatten(&live_json) != flatten(&merged) || live.is_none();
    let time = match &last {
        Some(l) if !object_changed => l.time.clone(),
        _ => now.to_owned(),
    };
    managers.insert(
        me,
        Managed {
            fields: applied_set,
            api_version: API_VERSION.to_owned(),
            time,
        },
    );

    fold_string_data(&mut merged);
    let mut out = secret_from_json(&merged).map_err(|e| {
        KubeError::BadRequest(format!(
            "Secret in version \"v1\" cannot be handled as a Secret: {e}"
        ))
    })?;
    if live.is_none() && out.type_.is_empty() {
        out.type_ = OPAQUE.to_owned();
    }
    // A manager left owning nothing is dropped (apimachinery's `stripMetaManager`), even the
    // applier's own entry when it applied nothing but the object's identity.
    out.metadata.managed_fields = managed::recorded(encode(&managers));
    if manager == KUBECTL {
        update_last_applied(&mut out, applied);
    }
    Ok(out)
}

/// The field manager of `kubectl apply --server-side`: the one manager whose applies read and
/// keep the client-side apply annotation (so that a user can move between the two).
const KUBECTL: &str = "kubectl";

/// The conflicts an apply by `kubectl` may override (apimachinery's `lastAppliedManager`): the
/// fields of the live object's last-applied configuration whose values the live object still
/// has. `None` if the object has no readable last-applied annotation.
fn allowed_conflicts_from_last_applied(live: &Value) -> Option<FieldSet> {
    let last = last_applied::original(live)?;
    let modified = compare(&flatten(&last), &flatten(live)).modified;
    Some(applied_fields(&last).difference(&modified))
}

/// Keeps the client-side apply annotation in step with a server-side apply by `kubectl`
/// (apimachinery's `lastAppliedUpdater`): if the object carries one, it becomes the applied
/// configuration (without that annotation, as `json.Marshal` writes it, with a final newline);
/// if that would make the annotations too large, the annotation is removed instead.
fn update_last_applied(out: &mut Secret, applied: &Value) {
    let annotations = &mut out.metadata.annotations;
    if annotations
        .get(last_applied::ANNOTATION)
        .is_none_or(String::is_empty)
    {
        return;
    }
    let mut config = applied.clone();
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        match meta.get_mut("annotations") {
            Some(Value::Object(a)) => {
                a.remove(last_applied::ANNOTATION);
            }
            // `GetAnnotations` reads anything else as no annotations, and they are left out.
            Some(_) => {
                meta.shift_remove("annotations");
            }
            None => {}
        }
    }
    let mut text = gojson::compact(&config);
    text.push('\n');
    annotations.insert(last_applied::ANNOTATION.to_owned(), text);
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ANNOTATIONS_SIZE {
        annotations.remove(last_applied::ANNOTATION);
    }
}

/// Records a non-apply write (create, update, patch) by `manager` in `new.metadata.managedFields`
/// (operation `Update`), given the object before it (`None` on create).
pub fn record_update(old: Option<&Secret>, new: &mut Secret, manager: &str, now: &str) {
    managed::record_update(old, new, manager, now);
}

/// Longest field manager name (apimachinery's `FieldManagerMaxLength`).
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// The manager kube-apiserver records, on the first apply to an object without
/// `managedFields`, as owning every field the object has (apimachinery's
/// `skipNonAppliedManager`): an apply then conflicts with it on any value it changes.
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// The managers of `live`, as an apply starts from them: its own, or, if it has none, one
/// `Update` by [`BEFORE_FIRST_APPLY`] owning every field it has.
fn first_apply_managers(live: &Secret, now: &str) -> Managers {
    if !live.metadata.managed_fields.is_empty() {
        return decode(&live.metadata.managed_fields);
    }
    let mut owned = live.clone();
    managed::record_update(None, &mut owned, BEFORE_FIRST_APPLY, now);
    if managed::is_none_owned(&owned.metadata.managed_fields) {
        return Managers::new();
    }
    decode(&owned.metadata.managed_fields)
}

/// The field manager of a non-apply write: the `fieldManager` parameter if given, else the
/// `User-Agent` up to its first `/`, without non-printable characters, cut to 128 bytes
/// (kube-apiserver's `managerOrUserAgent`; `OpenAPI-Generator` for the Python client).
pub fn manager_or_user_agent(field_manager: Option<&str>, user_agent: &str) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_owned();
    }
    let prefix = user_agent.split('/').next().unwrap_or_default();
    let mut out = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

/// What kube-apiserver refuses in an applied configuration before merging it.
fn check_applied(applied: &Value) -> Result<(), KubeError> {
    let Some(obj) = applied.as_object() else {
        return Err(KubeError::BadRequest(format!(
            "error decoding YAML: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(applied)
        )));
    };
    let version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if version != API_VERSION {
        return Err(KubeError::BadRequest(format!(
            "Incorrect version specified in apply patch. Specified patch version: {version}, expected: {API_VERSION}"
        )));
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "Secret" {
        return Err(KubeError::BadRequest(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: Secret"
        )));
    }
    let has_managed = applied
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|m| !m.is_null());
    if has_managed {
        return Err(KubeError::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let mut walk = Walk::default();
    walk.object(applied, &SECRET, "");
    let mut errs: Vec<String> = walk
        .unknown
        .iter()
        .map(|u| {
            let path = u
                .trim_start_matches("unknown field \"")
                .trim_end_matches('"');
            format!(".{path}: field not declared in schema")
        })
        .collect();
    if let Some(t) = walk.type_error {
        errs.push(t);
    }
    // structured-merge-diff's error, which kube-apiserver passes on as a 500 without a reason,
    // naming the object as `objectGVKNN` does (its namespace and name as the body gives them).
    let meta = |field: &str| {
        obj.get("metadata")
            .and_then(|m| m.get(field))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let object = format!("{}/{}; /v1, Kind=Secret", meta("namespace"), meta("name"));
    match errs.len() {
        0 => Ok(()),
        1 => Err(KubeError::Storage(format!(
            "failed to create typed patch object ({object}): {}",
            errs[0]
        ))),
        _ => Err(KubeError::Storage(format!(
            "failed to create typed patch object ({object}): errors:\n  {}",
            errs.join("\n  ")
        ))),
    }
}

/// The fields an applied configuration sets (structured-merge-diff's `ToFieldSet`): map keys
/// and scalars as leaves, list items by key (`ownerReferences`) or value (`finalizers`), an
/// empty or null map as the map itself; untracked fields left out.
pub fn applied_fields(applied: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    let root = FieldPath::default();
    let Some(top) = applied.as_object() else {
        return set;
    };
    for (k, v) in top {
        let p = root.child(format!("f:{k}"));
        match (k.as_str(), v) {
            ("metadata", Value::Object(meta)) if !meta.is_empty() => {
                for (mk, mv) in meta {
                    let mp = p.child(format!("f:{mk}"));
                    match (mk.as_str(), mv) {
                        ("labels" | "annotations", _) => map_fields(mv, &mp, &mut set),
                        ("ownerReferences", Value::Array(items)) => {
                            for item in items {
                                let uid = item.get("uid").and_then(Value::as_str).unwrap_or("");
                                set.insert(mp.child(owner_key(uid)));
                            }
                        }
                        ("finalizers", Value::Array(items)) => {
                            for item in items {
                                set.insert(mp.child(set_key(item.as_str().unwrap_or(""))));
                            }
                        }
                        _ => set.insert(mp),
                    }
                }
            }
            ("data" | "stringData", _) => map_fields(v, &p, &mut set),
            _ => set.insert(p),
        }
    }
    set.stripped()
}

fn map_fields(v: &Value, p: &FieldPath, set: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for k in m.keys() {
                set.insert(p.child(format!("f:{k}")));
            }
        }
        _ => set.insert(p.clone()),
    }
}

/// Merges an applied configuration into the live object's JSON (structured-merge-diff's merge
/// for Secret's schema). A `null` in the configuration removes the field.
fn merge_applied(base: &mut Value, applied: &Value) {
    let (Some(b), Some(a)) = (base.as_object_mut(), applied.as_object()) else {
        return;
    };
    for (k, v) in a {
        match k.as_str() {
            "metadata" => {
                let meta = b
                    .entry("metadata")
                    .or_insert_with(|| Value::Object(Map::new()));
                if !meta.is_object() {
                    *meta = Value::Object(Map::new());
                }
                if let (Some(bm), Some(am)) = (meta.as_object_mut(), v.as_object()) {
                    for (mk, mv) in am {
                        match mk.as_str() {
                            "labels" | "annotations" => merge_map(bm, mk, mv),
                            "ownerReferences" => merge_owner_references(bm, mv),
                            "finalizers" => merge_set(bm, mk, mv),
                            _ => put(bm, mk, mv),
                        }
                    }
                }
            }
            "data" | "stringData" => merge_map(b, k, v),
            _ => put(b, k, v),
        }
    }
}

fn put(m: &mut Map<String, Value>, k: &str, v: &Value) {
    if v.is_null() {
        m.remove(k);
    } else {
        m.insert(k.to_owned(), v.clone());
    }
}

fn merge_map(parent: &mut Map<String, Value>, k: &str, v: &Value) {
    let Some(a) = v.as_object() else {
        put(parent, k, v);
        return;
    };
    let target = parent
        .entry(k.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Some(t) = target.as_object_mut() {
        for (key, val) in a {
            put(t, key, val);
        }
    }
}

fn merge_set(parent: &mut Map<String, Value>, k: &str, v: &Value) {
    let Some(items) = v.as_array() else {
        put(parent, k, v);
        return;
    };
    let target = parent
        .entry(k.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    if let Some(t) = target.as_array_mut() {
        for x in items {
            if !t.contains(x) {
                t.push(x.clone());
            }
        }
    }
}

fn merge_owner_references(meta: &mut Map<String, Value>, v: &Value) {
    let Some(items) = v.as_array() else {
        put(meta, "ownerReferences", v);
        return;
    };
    let target = meta
        .entry("ownerReferences")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    if let Some(t) = target.as_array_mut() {
        for x in items {
            // Items are atomic: the applied one replaces the live one with its uid.
            match t.iter().position(|o| o.get("uid") == x.get("uid")) {
                Some(i) => t[i] = x.clone(),
                None => t.push(x.clone()),
            }
        }
    }
}

/// Removes the field at `p` from an object's JSON. A container is removed only once nothing
/// in it is owned (`owned`) any more.
fn prune(obj: &mut Value, p: &FieldPath, owned: &FieldSet) {
    let keys = &p.0;
    let Some((last, init)) = keys.split_last() else {
        return;
    };
    let mut cur = obj;
    for k in init {
        let Some(name) = k.strip_prefix("f:") else {
            return;
        };
        match cur.get_mut(name) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(name) = last.strip_prefix("f:") {
        let Some(m) = cur.as_object_mut() else {
            return;
        };
        let keep_children = owned.iter().any(|o| o.starts_with(p) && o != p);
        match m.get_mut(name) {
            Some(Value::Object(children)) if keep_children => {
                children.retain(|ck, _| owned.contains(&p.child(format!("f:{ck}"))));
            }
            Some(Value::Object(children)) => {
                children.retain(|ck, _| owned.contains(&p.child(format!("f:{ck}"))));
                if children.is_empty() {
                    m.remove(name);
                }
            }
            Some(_) => {
                m.remove(name);
            }
            None => {}
        }
    } else if let Some(items) = cur.as_array_mut() {
        items.retain(|item| {
            let key = match item {
                Value::String(s) => set_key(s),
                Value::Object(o) => owner_key(o.get("uid").and_then(Value::as_str).unwrap_or("")),
                _ => String::new(),
            };
            key != *last
        });
    }
}

#[cfg(test)]
mod tests;
