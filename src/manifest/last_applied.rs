//! kubectl's client-side apply on a Secret's JSON: the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, the three-way strategic merge
//! patch computed from it, the manifest and the live object, and that patch applied as
//! kube-apiserver applies it (then `stringData` folded into `data`).
//!
//! A Secret has no list fields with a merge strategy that a manifest may carry, so the
//! strategic merge patch here is the map part: maps merge key by key, `null` deletes, anything
//! else replaces. Removing a `stringData` key removes nothing from `data`, as upstream
//! (kubernetes/kubernetes#89938): the live object never holds `stringData`.

use serde_json::{Map, Value};

use super::gojson;

/// The annotation kubectl apply keeps the last applied manifest in.
pub const ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manifest as kubectl records it: `metadata.annotations` present (empty if none) without
/// the last-applied one, written by `json.Marshal` with a final newline.
pub fn configuration(manifest: &Value) -> String {
    let mut m = manifest.clone();
    annotations_mut(&mut m).remove(ANNOTATION);
    let mut s = gojson::compact(&m);
    s.push('\n');
    s
}

/// The manifest with its last-applied annotation set: what apply creates, and the "modified"
/// side of the three-way merge.
pub fn modified(manifest: &Value) -> Value {
    let config = configuration(manifest);
    let mut m = manifest.clone();
    annotations_mut(&mut m).insert(ANNOTATION.to_owned(), Value::String(config));
    m
}

/// The last-applied configuration an object carries, if it carries a readable one.
pub fn original(live: &Value) -> Option<Value> {
    let text = live
        .get("metadata")?
        .get("annotations")?
        .get(ANNOTATION)?
        .as_str()?;
    match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

fn annotations_mut(v: &mut Value) -> &mut Map<String, Value> {
    let obj = ensure_object(v);
    let meta = ensure_object(obj.entry("metadata").or_insert(Value::Null));
    ensure_object(meta.entry("annotations").or_insert(Value::Null))
}

fn ensure_object(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut()
        .expect("the value was just made an object")
}

/// kubectl's three-way patch (`CreateThreeWayMergePatch`, overwrite on): what changed from
/// `current` to `modified` (additions and changes only), plus `null` for what `original` had
/// and `modified` no longer has. Empty when there is nothing to do.
pub fn three_way_patch(
    original: Option<&Value>,
    modified: &Value,
    current: &Value,
) -> Map<String, Value> {
    let empty = Map::new();
    let as_map = |v: Option<&Value>| -> Map<String, Value> {
        v.and_then(Value::as_object).cloned().unwrap_or_default()
    };
    let modified = as_map(Some(modified));
    let delta = diff(&as_map(Some(current)), &modified, Diff::AdditionsAndChanges);
    let deletions = diff(
        original.and_then(Value::as_object).unwrap_or(&empty),
        &modified,
        Diff::Deletions,
    );
    merge(deletions, delta)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Diff {
    AdditionsAndChanges,
    Deletions,
}

fn diff(from: &Map<String, Value>, to: &Map<String, Value>, kind: Diff) -> Map<String, Value> {
    let mut patch = Map::new();
    for (k, tv) in to {
        match (from.get(k), tv) {
            (None, _) => {
                if kind == Diff::AdditionsAndChanges {
                    patch.insert(k.clone(), tv.clone());
                }
            }
            (Some(Value::Object(fm)), Value::Object(tm)) => {
                let sub = diff(fm, tm, kind);
                if !sub.is_empty() {
                    patch.insert(k.clone(), Value::Object(sub));
                }
            }
            (Some(fv), _) => {
                if fv != tv && kind == Diff::AdditionsAndChanges {
                    patch.insert(k.clone(), tv.clone());
                }
            }
        }
    }
    if kind == Diff::Deletions {
        for k in from.keys() {
            if !to.contains_key(k) {
                patch.insert(k.clone(), Value::Null);
            }
        }
    }
    patch
}

/// Merges `delta` into `deletions` (maps recursively; `delta` wins otherwise).
fn merge(mut base: Map<String, Value>, delta: Map<String, Value>) -> Map<String, Value> {
    for (k, dv) in delta {
        match (base.remove(&k), dv) {
            (Some(Value::Object(bm)), Value::Object(dm)) => {
                base.insert(k, Value::Object(merge(bm, dm)));
            }
            (_, dv) => {
                base.insert(k, dv);
            }
        }
    }
    base
}

/// The patch applied to `current` as kube-apiserver applies a strategic merge patch to a
/// Secret: `null` deletes, a `null` for a key the object lacks is dropped, maps merge; then
/// `stringData` overwrites `data` and is dropped.
pub fn apply_patch(current: &Value, patch: &Map<String, Value>) -> Value {
    let mut out = current.as_object().cloned().unwrap_or_default();
    merge_into(&mut out, patch);
    if let Some(Value::Object(sd)) = out.shift_remove("stringData") {
        let data = ensure_object(out.entry("data").or_insert(Value::Null));
        for (k, v) in sd {
            if let Value::String(s) = v {
                data.insert(k, Value::String(base64_of(s.as_bytes())));
            }
        }
    }
    Value::Object(out)
}

fn merge_into(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, pv) in patch {
        match (target.get_mut(k), pv) {
            (_, Value::Null) => {
                target.remove(k);
            }
            (Some(Value::Object(tm)), Value::Object(pm)) => merge_into(tm, pm),
            (_, pv) => {
                target.insert(k.clone(), without_nulls(pv));
            }
        }
    }
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        v => v.clone(),
    }
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The patch as kubectl shows it in an error, with every `data` and `stringData` value and
/// the last-applied annotation (which holds them too) replaced by `(redacted)`: keyward never
/// prints a secret value in a message.
pub fn redacted(patch: &Map<String, Value>) -> String {
    let mut p = Value::Object(patch.clone());
    let hide = |m: &mut Map<String, Value>| {
        for v in m.values_mut() {
            if !v.is_null() {
                *v = Value::String("(redacted)".into());
            }
        }
    };
    if let Some(obj) = p.as_object_mut() {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(m)) = obj.get_mut(field) {
                hide(m);
            }
        }
        if let Some(Value::String(s)) = obj
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            .and_then(|a| a.get_mut(ANNOTATION))
        {
            *s = "(redacted)".into();
        }
    }
    gojson::compact(&p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn configuration_matches_kubectls_annotation() {
        // The request body kubectl 1.33 sends for a first apply (kube-rest-facts.md §2).
        let manifest = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"labels": {"tier": "web"}, "name": "app", "namespace": "default"},
            "stringData": {"a": "one", "b": "two"}});
        assert_eq!(
            configuration(&manifest),
            "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"annotations\":{},\"labels\":{\"tier\":\"web\"},\"name\":\"app\",\"namespace\":\"default\"},\"stringData\":{\"a\":\"one\",\"b\":\"two\"}}\n"
        );
        let m = modified(&manifest);
        assert_eq!(
            original(&m),
            Some(serde_json::from_str(&configuration(&manifest)).unwrap())
        );
    }

    #[test]
    fn three_way_merge_removes_only_what_was_applied() {
        let first = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "app", "labels": {"tier": "web"}},
            "stringData": {"a": "one", "b": "two"}, "data": {"x": "eA==", "y": "eQ=="}});
        let live = apply_patch(
            &json!({"metadata": {"name": "app", "labels": {"other": "kept"}},
                "data": {"z": "eg=="}}),
            &three_way_patch(None, &modified(&first), &json!({})),
        );
        assert_eq!(
            live["data"],
            json!({"a": "b25l", "b": "dHdv", "x": "eA==", "y": "eQ==", "z": "eg=="})
        );
        // Drop label tier, stringData b and data y; change a. (Dropping `labels` altogether
        // would delete every label, others' too, as with kubectl.)
        let second = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "app", "labels": {}},
            "stringData": {"a": "uno"}, "data": {"x": "eA=="}});
        let patch = three_way_patch(original(&live).as_ref(), &modified(&second), &live);
        assert_eq!(patch["stringData"], json!({"a": "uno", "b": null}));
        assert_eq!(patch["data"], json!({"y": null}));
        assert_eq!(patch["metadata"]["labels"], json!({"tier": null}));
        let next = apply_patch(&live, &patch);
        // data.b stays (the stringData quirk); y is gone; z (someone else's) stays.
        assert_eq!(
            next["data"],
            json!({"a": "dW5v", "b": "dHdv", "x": "eA==", "z": "eg=="})
        );
        assert_eq!(next["metadata"]["labels"], json!({"other": "kept"}));
        assert!(!redacted(&patch).contains("uno"), "{}", redacted(&patch));
        // A data-only manifest re-applied is a no-op.
        let third = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"},
            "data": {"x": "eA=="}});
        let live = apply_patch(
            &next,
            &three_way_patch(original(&next).as_ref(), &modified(&third), &next),
        );
        assert!(three_way_patch(original(&live).as_ref(), &modified(&third), &live).is_empty());
    }
}
