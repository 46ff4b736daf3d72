//! The manifest codec: Secrets read as kubectl reads manifests (YAML, several documents, or
//! JSON; single objects or `kind: List`; `data` in base64 and `stringData`) and printed as
//! `kubectl get -o yaml|json` prints them (sorted keys, no `managedFields`, no `stringData`).

use serde_json::Value;

use super::ManifestError;
use crate::store::Secret;

const TOP_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "data",
    "stringData",
    "type",
    "immutable",
];
const META_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "labels",
    "annotations",
    "managedFields",
];

/// Parses every Secret in `text` (YAML or JSON; several documents; `kind: List`). `source`
/// names the input in errors.
pub fn parse(text: &str, source: &str) -> Result<Vec<Secret>, ManifestError> {
    Ok(parse_objects(text, source)?
        .into_iter()
        .map(|(s, _)| s)
        .collect())
}

/// [`parse`], with each Secret's manifest object as written (what kubectl apply records).
pub fn parse_objects(text: &str, source: &str) -> Result<Vec<(Secret, Value)>, ManifestError> {
    use serde::Deserialize;
    if let Some(at) = super::too_deep(text.as_bytes()) {
        // The document it is in: one more than the separators before it.
        let separators = text[..at]
            .lines()
            .skip(1)
            .filter(|l| l.starts_with("---"))
            .count();
        return Err(ManifestError::Syntax {
            input: source.to_owned(),
            document: separators + 1,
            detail: format!("yaml: exceeded max depth of {}", super::MAX_YAML_FLOW_DEPTH),
        });
    }
    let mut out = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| ManifestError::Syntax {
            input: source.to_owned(),
            document: i + 1,
            detail: crate::redact::serde_values(&e.to_string()),
        })?;
        collect(value, source, &mut out)?;
    }
    Ok(out)
}

fn collect(
    value: Value,
    source: &str,
    out: &mut Vec<(Secret, Value)>,
) -> Result<(), ManifestError> {
    let input = || source.to_owned();
    let obj = match value {
        Value::Null => return Ok(()),
        Value::Object(o) => o,
        _ => return Err(ManifestError::NotAnObject { input: input() }),
    };
    match obj.get("kind").and_then(Value::as_str) {
        Some("List") => {
            let items = obj
                .get("items")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in items {
                collect(item, source, out)?;
            }
            Ok(())
        }
        Some("Secret") => {
            if obj.get("apiVersion").and_then(Value::as_str) != Some("v1") {
                return Err(ManifestError::ApiVersion { input: input() });
            }
            let name = obj
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            for k in obj.keys() {
                if !TOP_FIELDS.contains(&k.as_str()) {
                    return Err(unknown(source, &name, k));
                }
            }
            if let Some(Value::Object(m)) = obj.get("metadata") {
                for k in m.keys() {
                    if !META_FIELDS.contains(&k.as_str()) {
                        return Err(unknown(source, &name, &format!("metadata.{k}")));
                    }
                }
            }
            let raw = Value::Object(obj.clone());
            let mut obj = obj;
            nulls_as_go_decodes_them(&mut obj);
            let s = decode_secret(obj).map_err(|detail| ManifestError::Decode {
                input: input(),
                name,
                detail,
            })?;
            out.push((s, raw));
            Ok(())
        }
        Some(other) => Err(ManifestError::UnsupportedKind {
            input: input(),
            kind: other.to_owned(),
        }),
        None => Err(ManifestError::KindNotSet { input: input() }),
    }
}

fn unknown(source: &str, name: &str, field: &str) -> ManifestError {
    ManifestError::UnknownField {
        input: source.to_owned(),
        name: name.to_owned(),
        field: field.to_owned(),
    }
}

/// The object as kubectl prints it: no `managedFields`, no `stringData`.
fn printable(s: &Secret) -> Value {
    let mut v = object_value(s);
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("managedFields");
    }
    v
}

/// The object with all it holds but `stringData` (its `managedFields` too, when it carries
/// them: objects read over keyward.v1 gRPC do not): what kubectl's `-o jsonpath` and
/// `custom-columns` read.
pub fn object_value(s: &Secret) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.shift_remove("stringData");
    }
    v
}

/// `null`s as Go's JSON decoding of a Secret reads them (what kubectl's and kube-apiserver's
/// decoders do with a manifest): a field that is `null` is left unset (`creationTimestamp:
/// null`, which `kubectl create --dry-run=client -o yaml` writes), and a `null` map value or
/// list item is the empty string (`stringData: {a: null}` is the key `a` with no value).
pub fn nulls_as_go_decodes_them(obj: &mut serde_json::Map<String, Value>) {
    fn zero_items(v: &mut Value) {
        let items: Box<dyn Iterator<Item = &mut Value>> = match v {
            Value::Object(m) => Box::new(m.values_mut()),
            Value::Array(a) => Box::new(a.iter_mut()),
            _ => return,
        };
        for x in items {
            if x.is_null() {
                *x = Value::String(String::new());
            }
        }
    }
    obj.retain(|_, v| !v.is_null());
    if let Some(Value::Object(meta)) = obj.get_mut("metadata") {
        meta.retain(|_, v| !v.is_null());
        for k in ["labels", "annotations", "finalizers"] {
            if let Some(v) = meta.get_mut(k) {
                zero_items(v);
            }
        }
    }
    for k in ["data", "stringData"] {
        if let Some(v) = obj.get_mut(k) {
            zero_items(v);
        }
    }
}

/// A Secret from its manifest object; an error names the field (`data[tls.key]`,
/// `immutable`, `metadata.labels`) and never quotes a value (a misplaced line may put a secret
/// in the wrong field).
fn decode_secret(obj: serde_json::Map<String, Value>) -> Result<Secret, String> {
    use serde::Deserialize;
    let value = Value::Object(obj);
    Secret::deserialize(&value).map_err(|e| {
        let (field, e) = match &value {
            Value::Object(obj) => failing_field(obj).unwrap_or((String::new(), e)),
            _ => (String::new(), e),
        };
        let detail = crate::redact::serde_values(&e.to_string());
        // serde's type errors and the base64 decoder's name no field.
        let generic = [
            "invalid type",
            "invalid value",
            "invalid length",
            "unknown variant",
            "a data value is not valid base64",
        ]
        .iter()
        .any(|p| detail.starts_with(p));
        if field.is_empty() || !generic {
            detail
        } else {
            format!("{field}: {detail}")
        }
    })
}

/// The first field of `obj` (one level into `metadata`, `data` and `stringData`) that does not
/// decode on its own, and its error.
fn failing_field(obj: &serde_json::Map<String, Value>) -> Option<(String, serde_json::Error)> {
    use serde::Deserialize;
    let alone = |k: &str, v: &Value| {
        let mut m = serde_json::Map::new();
        m.insert(k.to_owned(), v.clone());
        Secret::deserialize(&Value::Object(m)).err()
    };
    for (k, v) in obj {
        let Some(e) = alone(k, v) else {
            continue;
        };
        if let Value::Object(inner) = v {
            for (ik, iv) in inner {
                let mut one = serde_json::Map::new();
                one.insert(ik.clone(), iv.clone());
                if let Some(e) = alone(k, &Value::Object(one)) {
                    let field = if k == "metadata" {
                        format!("metadata.{ik}")
                    } else {
                        format!("{k}[{ik}]")
                    };
                    return Some((field, e));
                }
            }
        }
        return Some((k.clone(), e));
    }
    None
}

/// A Secret as YAML, byte for byte as `kubectl get -o yaml` prints it.
pub fn to_yaml(s: &Secret) -> String {
    super::goyaml::to_yaml(&printable(s))
}

/// JSON indented by four spaces, byte for byte as `kubectl get -o json` prints it (without
/// its final newline).
pub fn to_json(v: &Value) -> String {
    super::gojson::indented(v)
}

/// A Secret as JSON, like `kubectl get -o json`.
pub fn secret_json(s: &Secret) -> String {
    to_json(&printable(s))
}

/// Several Secrets as a `kind: List`, as kubectl prints a list.
pub fn list_value(items: &[Secret]) -> Value {
    list_of(items.iter().map(printable).collect())
}

/// Several objects as kubectl's `kind: List`.
pub fn list_of(items: Vec<Value>) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": items,
        "metadata": {"resourceVersion": ""},
    })
}

/// Several Secrets as a YAML `kind: List`, like `kubectl get -o yaml`.
pub fn list_yaml(items: &[Secret]) -> String {
    super::goyaml::to_yaml(&list_value(items))
}

/// Several Secrets as a JSON `kind: List`, like `kubectl get -o json`.
pub fn list_json(items: &[Secret]) -> String {
    to_json(&list_value(items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_lists_and_string_data() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\nstringData: {user: admin}\n---\n---\n{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"b\",\"namespace\":\"x\"},\"data\":{\"k\":\"dg==\"},\"type\":\"Opaque\"}]}\n";
        let s = parse(text, "m.yaml").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].metadata.name, "a");
        assert_eq!(s[0].string_data["user"].0.as_str(), "admin");
        assert_eq!(s[1].data["k"].as_slice(), b"v");
        assert_eq!(s[1].metadata.namespace, "x");
    }

    #[test]
    fn rejections_name_the_problem() {
        for (text, want) in [
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
                "kind \"ConfigMap\" is not supported",
            ),
            ("apiVersion: v1\nmetadata: {name: a}\n", "kind not set"),
            (
                "apiVersion: v2\nkind: Secret\nmetadata: {name: a}\n",
                "apiVersion must be \"v1\"",
            ),
            (
                "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\nspec: {}\n",
                "unknown field \"spec\"",
            ),
            (
                "apiVersion: v1\nkind: Secret\nmetadata: {name: a, finalizers: [x]}\n",
                "unknown field \"metadata.finalizers\"",
            ),
            (
                "apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: {k: '%%%'}\n",
                "not valid base64",
            ),
            (
                "apiVersion: v1\nkind: Secret\n  bad: [indent\n",
                "error parsing m.yaml",
            ),
            ("- 1\n- 2\n", "must be an object"),
        ] {
            let e = parse(text, "m.yaml").unwrap_err();
            let e = e.to_string();
            assert!(e.contains(want), "{text:?} -> {e}");
        }
    }

    #[test]
    fn printing_is_sorted_and_hides_write_only_and_managed_fields() {
        let s = &parse(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: a, managedFields: [{manager: keyward}]}\ndata: {k: dg==}\ntype: Opaque\n",
            "m",
        )
        .unwrap()[0];
        let y = to_yaml(s);
        assert_eq!(
            y,
            "apiVersion: v1\ndata:\n  k: dg==\nkind: Secret\nmetadata:\n  name: a\ntype: Opaque\n"
        );
        let j = secret_json(s);
        assert!(
            j.starts_with("{\n    \"apiVersion\": \"v1\",\n    \"data\": {"),
            "{j}"
        );
    }
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    /// Deeply nested flow collections are refused before libyaml's scanner, which takes time
    /// quadratic in their number, looks at them (the parser's own refusal is "recursion limit
    /// exceeded", after seconds), naming the document.
    #[test]
    fn deeply_nested_manifests_are_refused_before_parsing() {
        let deep = format!("a: {}", "[".repeat(50_000));
        let text = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: a}}\n---\n{deep}\n");
        let err = parse(&text, "deep.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "error parsing deep.yaml (document 2): yaml: exceeded max depth of 1000"
        );
        let fine = format!("a: {}{}\n", "[".repeat(100), "]".repeat(100));
        assert!(crate::manifest::too_deep(fine.as_bytes()).is_none());
    }
}
