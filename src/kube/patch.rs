//! Patches on a Secret's JSON: strategic merge (Secret's schema: maps merge, `finalizers` is a
//! merged set, `ownerReferences` a list merged by `uid`), JSON merge (RFC 7386) and JSON patch
//! (RFC 6902), each as kube-apiserver applies it to the stored object's JSON. After any patch,
//! `stringData` entries overwrite `data` and `stringData` is dropped, as kube-apiserver's
//! conversion of the patched object does.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{Map, Value};

use super::objects::json_kind;
use super::KubeError;

/// Most operations a JSON patch may hold (kube-apiserver's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// `application/strategic-merge-patch+json` applied to `live` (the stored object's JSON).
pub fn strategic_merge(live: &Value, patch: &Value) -> Result<Value, KubeError> {
    let Value::Object(p) = patch else {
        return Err(KubeError::BadRequest(format!(
            "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(patch)
        )));
    };
    let live = live.as_object().cloned().unwrap_or_default();
    let mut out = match merge_map(live, p, Ctx::Secret)? {
        Some(m) => Value::Object(m),
        None => Value::Object(Map::new()),
    };
    fold_string_data(&mut out);
    Ok(out)
}

/// `application/merge-patch+json` (RFC 7386) applied to `live`.
///
/// With `strict_decode` (the `Warn` and `Strict` field validations) the patch is first decoded
/// into a map, as kube-apiserver's handler decodes it for its field checks: a patch that is not
/// an object (or `null`) is refused in its words.
pub fn merge(live: &Value, patch: &Value, strict_decode: bool) -> Result<Value, KubeError> {
    if strict_decode && !(patch.is_object() || patch.is_null()) {
        return Err(KubeError::BadRequest(format!(
            "error decoding patch: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            json_kind(patch)
        )));
    }
    let mut out = live.clone();
    merge_patch(&mut out, patch);
    fold_string_data(&mut out);
    Ok(out)
}

/// `application/json-patch+json` (RFC 6902) applied to `live`: a body that is not a list of
/// operations is a 400, more than [`MAX_JSON_PATCH_OPERATIONS`] a 413, an operation that
/// does not apply (a failed `test`, a missing path) a 422.
///
/// With `strict_decode` (the `Warn` and `Strict` field validations, the default) the body is
/// first decoded as kube-apiserver's handler decodes it for its field checks, whose errors
/// name its own types (`error decoding patch: json: cannot unmarshal object into Go value of
/// type []handlers.jsonPatchOp`); with `Ignore` only the patch library decodes it.
pub fn json_patch(live: &Value, patch: &Value, strict_decode: bool) -> Result<Value, KubeError> {
    let ops = decode_ops(patch, strict_decode)?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(KubeError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {}",
            ops.len()
        )));
    }
    let mut doc = live.clone();
    for op in &ops {
        apply_op(&mut doc, op).map_err(KubeError::Unprocessable)?;
    }
    fold_string_data(&mut doc);
    Ok(doc)
}

/// `stringData` entries overwrite `data` (base64) and `stringData` is dropped
/// (`Convert_v1_Secret_To_core_Secret`). Non-string entries are left for decoding to refuse.
pub fn fold_string_data(obj: &mut Value) {
    let Some(top) = obj.as_object_mut() else {
        return;
    };
    let Some(sd) = top.get("stringData") else {
        return;
    };
    let Some(sd) = sd.as_object().cloned() else {
        return;
    };
    if sd.values().any(|v| !(v.is_string() || v.is_null())) {
        return;
    }
    top.shift_remove("stringData");
    if sd.is_empty() {
        return;
    }
    let data = top
        .entry("data")
        .or_insert_with(|| Value::Object(Map::new()));
    if data.is_null() {
        *data = Value::Object(Map::new());
    }
    if let Some(d) = data.as_object_mut() {
        for (k, v) in sd {
            let s = v.as_str().unwrap_or_default();
            d.insert(k, Value::String(B64.encode(s.as_bytes())));
        }
    }
}

/// Where in a Secret a map is, for the list rules of strategic merge.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// The Secret itself.
    Secret,
    /// `metadata`.
    Meta,
    /// Any other map (data, labels, an owner reference, unknown fields).
    Plain,
}

/// A JSON value as Go's `%s` prints what it decoded it into (strings as they are, other
/// scalars as `%!s(int64=5)`; a list or map is not printed, as it may hold Secret values).
fn go_percent_s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "%!s(<nil>)".to_owned(),
        Value::Bool(b) => format!("%!s(bool={b})"),
        Value::Number(n) if n.is_i64() => format!("%!s(int64={n})"),
        Value::Number(n) => format!("%!s(float64={n})"),
        _ => "<redacted>".to_owned(),
    }
}

fn bad(msg: impl Into<String>) -> KubeError {
    KubeError::BadRequest(msg.into())
}

/// Merges `patch` into `original` (a map); `None` means the map is deleted (`$patch: delete`).
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    ctx: Ctx,
) -> Result<Option<Map<String, Value>>, KubeError> {
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(d)) if d == "replace" => {
            // The rest of the map as it is (strategicpatch's handleDirectiveInMergeMap).
            let mut m = patch.clone();
            m.remove(PATCH);
            return Ok(Some(m));
        }
        Some(Value::String(d)) if d == "delete" => return Ok(None),
        Some(other) => {
            // strategicpatch's ErrBadPatchType, which is no API status: kube-apiserver
            // answers it with a 500 without a reason. It also prints the map, which may hold
            // Secret values, so the map is left out.
            return Err(KubeError::Storage(format!(
                "unknown patch type: {} in map: <redacted>",
                go_percent_s(other)
            )));
        }
    }
    if let Some(v) = patch.get(RETAIN_KEYS) {
        // Secret's fields have no retainKeys strategy: the directive is checked and ignored.
        if !v.is_array() {
            return Err(bad("invalid patch: $retainKeys must be a list"));
        }
    }
    // Deletions from primitive lists apply to the original first.
    for (k, v) in patch {
        if let Some(list) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(del) = v else {
                return Err(bad(
                    "invalid patch: $deleteFromPrimitiveList must be a list",
                ));
            };
            if let Some(Value::Array(items)) = original.get_mut(list) {
                items.retain(|x| !del.contains(x));
                if ctx == Ctx::Meta && list == "finalizers" {
                    // A merged list of scalars comes out of strategicpatch's deleteFromSlice
                    // without repeats, in order.
                    items.sort_by_key(go_text);
                    items.dedup();
                }
            }
        }
    }
    for (k, pv) in patch {
        // The directives; any other key that starts with `$` is merged as a field (and then
        // validated as one: `data[$x]` is an invalid key).
        if is_directive(k) {
            continue;
        }
        if pv.is_null() {
            // IgnoreUnmatchedNulls: a null deletes the key, and is never stored.
            original.remove(k);
            continue;
        }
        let list_rule = match (ctx, k.as_str()) {
            (Ctx::Meta, "finalizers") => ListRule::Set,
            (Ctx::Meta, "ownerReferences") => ListRule::ByUid,
            _ => ListRule::Replace,
        };
        let child_ctx = match (ctx, k.as_str()) {
            (Ctx::Secret, "metadata") => Ctx::Meta,
            _ => Ctx::Plain,
        };
        let merged = match (original.remove(k), pv) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                merge_map(o, p, child_ctx)?.map(Value::Object)
            }
            // A field the original lacks (or holds as another type) takes the patch's value,
            // its nulls dropped and its maps holding `$patch` left out (strategicpatch's
            // removeDirectives).
            (_, Value::Object(p)) => {
                let mut v = Value::Object(p.clone());
                discard_nulls(&mut v);
                without_directives(v)
            }
            (o, Value::Array(p)) if list_rule != ListRule::Replace => {
                let o = match o {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                merge_list(o, p, list_rule)?.map(Value::Array)
            }
            (_, Value::Array(p)) => {
                // Replaced; a `$patch: replace` element is dropped.
                Some(Value::Array(
                    p.iter()
                        .filter(|x| x.get(PATCH).is_none())
                        .cloned()
                        .collect(),
                ))
            }
            (_, other) => Some(other.clone()),
        };
        if let Some(v) = merged {
            original.insert(k.clone(), v);
        }
    }
    // `$setElementOrder/<list>`: order the merged list as given (items not named keep their
    // place after the named ones).
    for (k, v) in patch {
        if let Some(list) = k.strip_prefix(SET_ELEMENT_ORDER) {
            let Value::Array(order) = v else {
                return Err(bad("invalid patch: $setElementOrder must be a list"));
            };
            if let Some(Value::Array(items)) = original.get_mut(list) {
                let key = |x: &Value| -> Value {
                    match x {
                        Value::Object(m) => m.get("uid").cloned().unwrap_or(Value::Null),
                        other => other.clone(),
                    }
                };
                let rank = |x: &Value| {
                    let kx = key(x);
                    order
                        .iter()
                        .position(|o| key(o) == kx)
                        .unwrap_or(usize::MAX)
                };
                items.sort_by_key(|x| rank(x));
            }
        }
    }
    Ok(Some(original))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ListRule {
    /// Replace the list.
    Replace,
    /// Union of scalars (`finalizers`).
    Set,
    /// Maps merged by `uid` (`ownerReferences`).
    ByUid,
}

fn strip_directives(m: &mut Map<String, Value>) {
    m.retain(|k, _| !k.starts_with('$'));
}

/// Whether `k` is one of strategic merge patch's directives.
fn is_directive(k: &str) -> bool {
    k == PATCH
        || k == RETAIN_KEYS
        || k.starts_with(SET_ELEMENT_ORDER)
        || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

/// Drops the null values of maps, at any depth (strategicpatch's discardNullValuesFromPatch).
fn discard_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(discard_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

/// `v` without the maps that hold `$patch` (at any depth), or `None` if `v` is one
/// (strategicpatch's removeDirectives).
fn without_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) if m.contains_key(PATCH) => None,
        Value::Object(m) => Some(Value::Object(
            m.into_iter()
                .filter_map(|(k, x)| without_directives(x).map(|x| (k, x)))
                .collect(),
        )),
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(without_directives).collect(),
        )),
        other => Some(other),
    }
}

/// A scalar as Go's `fmt.Sprintf("%v")` prints it, by which strategicpatch sorts scalars.
fn go_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn merge_list(
    mut original: Vec<Value>,
    patch: &[Value],
    rule: ListRule,
) -> Result<Option<Vec<Value>>, KubeError> {
    // `[{"$patch": "replace"}, …]`: the other elements replace the list.
    let replace = patch
        .iter()
        .any(|x| x.get(PATCH).and_then(Value::as_str) == Some("replace"));
    if replace {
        return Ok(Some(
            patch
                .iter()
                .filter(|x| x.get(PATCH).is_none())
                .cloned()
                .collect(),
        ));
    }
    match rule {
        ListRule::Set => {
            for x in patch {
                if !original.contains(x) {
                    original.push(x.clone());
                }
            }
        }
        ListRule::ByUid => {
            for x in patch {
                let Value::Object(p) = x else {
                    return Err(bad(format!(
                        "invalid patch: an ownerReferences item is a {}, not a map",
                        json_kind(x)
                    )));
                };
                let Some(uid) = p.get("uid") else {
                    return Err(bad(
                        "map: an ownerReferences item does not contain declared merge key: uid",
                    ));
                };
                let at = original.iter().position(|o| o.get("uid") == Some(uid));
                match (at, p.get(PATCH).and_then(Value::as_str)) {
                    (Some(i), Some("delete")) => {
                        original.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), _) => {
                        let o = match original.remove(i) {
                            Value::Object(o) => o,
                            _ => Map::new(),
                        };
                        if let Some(m) = merge_map(o, p, Ctx::Plain)? {
                            original.insert(i, Value::Object(m));
                        }
                    }
                    (None, _) => {
                        let mut m = p.clone();
                        strip_directives(&mut m);
                        original.push(Value::Object(m));
                    }
                }
            }
        }
        ListRule::Replace => return Ok(Some(patch.to_vec())),
    }
    Ok(Some(original))
}

/// RFC 7386 `MergePatch(target, patch)` in place.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// One decoded JSON patch operation.
#[derive(Debug)]
struct Op {
    op: String,
    path: String,
    from: Option<String>,
    value: Option<Value>,
}

fn decode_ops(patch: &Value, strict_decode: bool) -> Result<Vec<Op>, KubeError> {
    // What cannot be decoded, in the words of the decoder that reads it first.
    let cannot = |what: &Value, strict_type: &str, library_type: &str| {
        let kind = json_kind(what);
        bad(if strict_decode {
            format!("error decoding patch: json: cannot unmarshal {kind} into {strict_type}")
        } else {
            format!("json: cannot unmarshal {kind} into {library_type}")
        })
    };
    let Value::Array(items) = patch else {
        return Err(cannot(
            patch,
            "Go value of type []handlers.jsonPatchOp",
            "Go value of type jsonpatch.Patch",
        ));
    };
    items
        .iter()
        .map(|item| {
            let Value::Object(m) = item else {
                return Err(cannot(
                    item,
                    "Go value of type handlers.jsonPatchOp",
                    "Go value of type jsonpatch.Operation",
                ));
            };
            let s = |k: &str| -> Result<Option<String>, KubeError> {
                match m.get(k) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(other) => Err(cannot(
                        other,
                        &format!("Go struct field jsonPatchOp.{k} of type string"),
                        "Go value of type string",
                    )),
                }
            };
            Ok(Op {
                op: s("op")?.unwrap_or_default(),
                path: s("path")?.unwrap_or_default(),
                from: s("from")?,
                value: m.get("value").cloned(),
            })
        })
        .collect()
}

/// The reference tokens of a JSON pointer (`~1` is `/`, `~0` is `~`); `None` if it is not a
/// pointer.
fn tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// The container holding the pointer's last token, and that token.
fn parent_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Option<(&'a mut Value, String)> {
    let (last, init) = toks.split_last()?;
    let mut cur = doc;
    for t in init {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => a.get_mut(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some((cur, last.clone()))
}

fn get<'a>(doc: &'a Value, toks: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, path: &str, value: Value, op: &str) -> Result<(), String> {
    let toks = tokens(path).ok_or_else(|| {
        format!("{op} operation does not apply: doc is missing path: \"{path}\": missing value")
    })?;
    // json-patch v4 finds no container for the whole document: adding to it fails.
    let (parent, key) = parent_mut(doc, &toks).ok_or_else(|| {
        format!("{op} operation does not apply: doc is missing path: \"{path}\": missing value")
    })?;
    match parent {
        Value::Object(m) => {
            m.insert(key, value);
            Ok(())
        }
        Value::Array(a) => {
            let idx = if key == "-" {
                a.len()
            } else {
                key.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| {
                        format!("error in {op} for path: '{path}': Unable to access invalid index: {key}: invalid index referenced")
                    })?
            };
            a.insert(idx, value);
            Ok(())
        }
        _ => Err(format!(
            "{op} operation does not apply: doc is missing path: \"{path}\": missing value"
        )),
    }
}

fn remove(doc: &mut Value, path: &str, op: &str) -> Result<Value, String> {
    let missing_path =
        || format!("{op} operation does not apply: doc is missing path: \"{path}\": missing value");
    let toks = tokens(path).ok_or_else(missing_path)?;
    let (parent, key) = parent_mut(doc, &toks).ok_or_else(missing_path)?;
    match parent {
        Value::Object(m) => m.remove(&key).ok_or_else(|| {
            format!(
                "error in {op} for path: '{path}': Unable to remove nonexistent key: {key}: missing value"
            )
        }),
        Value::Array(a) => match key.parse::<usize>() {
            Ok(i) if i < a.len() => Ok(a.remove(i)),
            _ => Err(format!(
                "error in {op} for path: '{path}': Unable to access invalid index: {key}: invalid index referenced"
            )),
        },
        _ => Err(missing_path()),
    }
}

/// One RFC 6902 operation; the error is the message of evanphx/json-patch (v4), which
/// kube-apiserver uses.
fn apply_op(doc: &mut Value, op: &Op) -> Result<(), String> {
    let path = op.path.as_str();
    let value = || {
        op.value
            .clone()
            .ok_or_else(|| format!("{} operation missing value: missing value", op.op))
    };
    let from = || {
        op.from
            .clone()
            .ok_or_else(|| format!("{} operation missing from: missing value", op.op))
    };
    match op.op.as_str() {
        "add" => add(doc, path, value()?, "add"),
        "remove" => remove(doc, path, "remove").map(|_| ()),
        "replace" => {
            let v = value()?;
            let toks = tokens(path).ok_or_else(|| {
                format!(
                    "replace operation does not apply: doc is missing path: {path}: missing value"
                )
            })?;
            // json-patch v4 replaces the whole document with an object or a list only.
            if toks.is_empty() {
                if !(v.is_object() || v.is_array()) {
                    return Err(
                        "replace operation value must be object or array: missing value".into(),
                    );
                }
                *doc = v;
                return Ok(());
            }
            let (parent, key) = parent_mut(doc, &toks).ok_or_else(|| {
                format!(
                    "replace operation does not apply: doc is missing path: {path}: missing value"
                )
            })?;
            match parent {
                // json-patch v4 replaces a missing key of an existing object too.
                Value::Object(m) => {
                    m.insert(key, v);
                    Ok(())
                }
                Value::Array(a) => match key.parse::<usize>() {
                    Ok(i) if i < a.len() => {
                        a[i] = v;
                        Ok(())
                    }
                    _ => Err(format!(
                        "replace operation does not apply: doc is missing key: {path}: missing value"
                    )),
                },
                _ => Err(format!(
                    "replace operation does not apply: doc is missing path: {path}: missing value"
                )),
            }
        }
        "move" => {
            let f = from()?;
            let toks = tokens(&f).unwrap_or_default();
            if get(doc, &toks).is_none() || toks.is_empty() {
                return Err(format!(
                    "move operation does not apply: doc is missing from path: {f}: missing value"
                ));
            }
            let v = remove(doc, &f, "move")?;
            add(doc, path, v, "move")
        }
        "copy" => {
            let f = from()?;
            let toks = tokens(&f).ok_or_else(|| {
                format!(
                    "copy operation does not apply: doc is missing from path: {f}: missing value"
                )
            })?;
            let v = get(doc, &toks).cloned().ok_or_else(|| {
                format!(
                    "copy operation does not apply: doc is missing from path: {f}: missing value"
                )
            })?;
            add(doc, path, v, "copy")
        }
        "test" => {
            let want = op.value.clone().unwrap_or(Value::Null);
            let toks = tokens(path).ok_or_else(|| {
                format!("test operation does not apply: is missing path: {path}: missing value")
            })?;
            let parent_exists = match toks.split_last() {
                None => true,
                Some((_, init)) => get(doc, init).is_some_and(|p| p.is_object() || p.is_array()),
            };
            match get(doc, &toks) {
                Some(v) if *v == want => Ok(()),
                None if want.is_null() && parent_exists => Ok(()),
                None if !parent_exists => Err(format!(
                    "test operation does not apply: is missing path: {path}: missing value"
                )),
                _ => Err(format!("testing value {path} failed: test failed")),
            }
        }
        other => Err(format!("Unexpected kind: {other}")),
    }
}

#[cfg(test)]
mod tests;
