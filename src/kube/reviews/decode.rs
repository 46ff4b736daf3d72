//! Reading a review's request body as kube-apiserver's create handler reads it: its schema
//! (unknown and duplicate fields per `fieldValidation`, wrong types), its `apiVersion` and
//! `kind`, and the validation of its metadata.

use serde_json::{Map, Value};

use super::Review;
use crate::authz::go_quote;
use crate::kube::objects::{Shape, OBJECT_META, STRING};
use crate::kube::KubeError;

const RESOURCE_ATTRIBUTES: Shape = Shape::Struct(
    &[
        ("namespace", STRING),
        ("verb", STRING),
        ("group", STRING),
        ("version", STRING),
        ("resource", STRING),
        ("subresource", STRING),
        ("name", STRING),
    ],
    "ResourceAttributes",
    "v1.ResourceAttributes",
);

const NON_RESOURCE_ATTRIBUTES: Shape = Shape::Struct(
    &[("path", STRING), ("verb", STRING)],
    "NonResourceAttributes",
    "v1.NonResourceAttributes",
);

const ACCESS_STATUS: Shape = Shape::Struct(
    &[
        ("allowed", Shape::Bool),
        ("denied", Shape::Bool),
        ("reason", STRING),
        ("evaluationError", STRING),
    ],
    "SubjectAccessReviewStatus",
    "v1.SubjectAccessReviewStatus",
);

/// `SelfSubjectAccessReview` (v1).
pub(super) const SELF_SUBJECT_ACCESS_REVIEW: Shape = Shape::Struct(
    &[
        ("kind", STRING),
        ("apiVersion", STRING),
        ("metadata", OBJECT_META),
        (
            "spec",
            Shape::Struct(
                &[
                    ("resourceAttributes", RESOURCE_ATTRIBUTES),
                    ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES),
                ],
                "SelfSubjectAccessReviewSpec",
                "v1.SelfSubjectAccessReviewSpec",
            ),
        ),
        ("status", ACCESS_STATUS),
    ],
    "SelfSubjectAccessReview",
    "v1.SelfSubjectAccessReview",
);

const SUBJECT_ACCESS_REVIEW_SPEC: Shape = Shape::Struct(
    &[
        ("resourceAttributes", RESOURCE_ATTRIBUTES),
        ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES),
        ("user", STRING),
        ("groups", Shape::StrList),
        ("extra", Shape::StrListMap),
        ("uid", STRING),
    ],
    "SubjectAccessReviewSpec",
    "v1.SubjectAccessReviewSpec",
);

/// `SubjectAccessReview` (v1).
pub(super) const SUBJECT_ACCESS_REVIEW: Shape = Shape::Struct(
    &[
        ("kind", STRING),
        ("apiVersion", STRING),
        ("metadata", OBJECT_META),
        ("spec", SUBJECT_ACCESS_REVIEW_SPEC),
        ("status", ACCESS_STATUS),
    ],
    "SubjectAccessReview",
    "v1.SubjectAccessReview",
);

/// `LocalSubjectAccessReview` (v1).
pub(super) const LOCAL_SUBJECT_ACCESS_REVIEW: Shape = Shape::Struct(
    &[
        ("kind", STRING),
        ("apiVersion", STRING),
        ("metadata", OBJECT_META),
        ("spec", SUBJECT_ACCESS_REVIEW_SPEC),
        ("status", ACCESS_STATUS),
    ],
    "LocalSubjectAccessReview",
    "v1.LocalSubjectAccessReview",
);

const RULES_STATUS: Shape = Shape::Struct(
    &[
        (
            "resourceRules",
            Shape::List(
                &Shape::Struct(
                    &[
                        ("verbs", Shape::StrList),
                        ("apiGroups", Shape::StrList),
                        ("resources", Shape::StrList),
                        ("resourceNames", Shape::StrList),
                    ],
                    "ResourceRule",
                    "v1.ResourceRule",
                ),
                "[]v1.ResourceRule",
            ),
        ),
        (
            "nonResourceRules",
            Shape::List(
                &Shape::Struct(
                    &[
                        ("verbs", Shape::StrList),
                        ("nonResourceURLs", Shape::StrList),
                    ],
                    "NonResourceRule",
                    "v1.NonResourceRule",
                ),
                "[]v1.NonResourceRule",
            ),
        ),
        ("incomplete", Shape::Bool),
        ("evaluationError", STRING),
    ],
    "SubjectRulesReviewStatus",
    "v1.SubjectRulesReviewStatus",
);

const SELF_SUBJECT_REVIEW_STATUS: Shape = Shape::Struct(
    &[(
        "userInfo",
        Shape::Struct(
            &[
                ("username", STRING),
                ("uid", STRING),
                ("groups", Shape::StrList),
                ("extra", Shape::StrListMap),
            ],
            "UserInfo",
            "v1.UserInfo",
        ),
    )],
    "SelfSubjectReviewStatus",
    "v1.SelfSubjectReviewStatus",
);

/// `SelfSubjectRulesReview` (v1).
pub(super) const SELF_SUBJECT_RULES_REVIEW: Shape = Shape::Struct(
    &[
        ("kind", STRING),
        ("apiVersion", STRING),
        ("metadata", OBJECT_META),
        (
            "spec",
            Shape::Struct(
                &[("namespace", STRING)],
                "SelfSubjectRulesReviewSpec",
                "v1.SelfSubjectRulesReviewSpec",
            ),
        ),
        ("status", RULES_STATUS),
    ],
    "SelfSubjectRulesReview",
    "v1.SelfSubjectRulesReview",
);

/// `SelfSubjectReview` (v1, v1beta1).
pub(super) const SELF_SUBJECT_REVIEW: Shape = Shape::Struct(
    &[
        ("kind", STRING),
        ("apiVersion", STRING),
        ("metadata", OBJECT_META),
        ("status", SELF_SUBJECT_REVIEW_STATUS),
    ],
    "SelfSubjectReview",
    "v1.SelfSubjectReview",
);

/// The kinds kube-apiserver's scheme registers in each version of the review groups (the
/// versions it no longer serves are still registered).
fn registered(api_version: &str) -> &'static [&'static str] {
    const AUTHORIZATION: &[&str] = &[
        "SubjectAccessReview",
        "SelfSubjectAccessReview",
        "LocalSubjectAccessReview",
        "SelfSubjectRulesReview",
    ];
    match api_version {
        "authorization.k8s.io/v1" | "authorization.k8s.io/v1beta1" => AUTHORIZATION,
        "authentication.k8s.io/v1" => &["TokenReview", "TokenRequest", "SelfSubjectReview"],
        "authentication.k8s.io/v1beta1" => &["TokenReview", "SelfSubjectReview"],
        "authentication.k8s.io/v1alpha1" => &["SelfSubjectReview"],
        _ => &[],
    }
}

/// The body's `apiVersion` and `kind` against the review's, as kube-apiserver's decoder and
/// create handler check them (either may be left out: the URL says what the body is).
pub(super) fn check_type(review: Review, body: &Value) -> Result<(), KubeError> {
    let (want_kind, want_version) = (review.kind(), review.api_version());
    let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
    let kind = match text("kind") {
        "" => want_kind,
        k => k,
    };
    let api_version = match text("apiVersion") {
        "" => want_version,
        v => v,
    };
    let short = api_version.rsplit('/').next().unwrap_or_default();
    let cannot = |why: String| {
        Err(KubeError::BadRequest(format!(
            "{kind} in version {} cannot be handled as a {want_kind}: {why}",
            go_quote(short)
        )))
    };
    if !registered(api_version).contains(&kind) {
        return cannot(format!(
            "no kind {} is registered for version {} in scheme \"pkg/api/legacyscheme/scheme.go:30\"",
            go_quote(kind),
            go_quote(api_version)
        ));
    }
    if kind != want_kind {
        let internal = |gv: &str| {
            gv.split('/')
                .next()
                .unwrap_or_default()
                .split('.')
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        return cannot(format!(
            "converting ({short}.{kind}) to ({}.{want_kind}): unknown conversion",
            internal(want_version)
        ));
    }
    if api_version != want_version {
        return Err(KubeError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({want_version})"
        )));
    }
    Ok(())
}

/// Whether `meta` (a body's `metadata`, read against the schema) is empty as kube-apiserver's
/// `apiequality.Semantic.DeepEqual(metav1.ObjectMeta{}, …)` sees it (empty maps and lists are
/// nil), `managedFields` and the fields in `ignore` aside.
pub(super) fn meta_is_empty(meta: &Value, ignore: &[&str]) -> bool {
    let Some(m) = meta.as_object() else {
        return true;
    };
    m.iter()
        .filter(|(k, _)| k.as_str() != "managedFields" && !ignore.contains(&k.as_str()))
        .all(|(_, v)| match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Number(n) => n.as_i64() == Some(0),
            Value::Object(o) => o.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Bool(_) => false,
        })
}

/// `meta` as Go's `%#v` prints a `v1.ObjectMeta` in a field error (`metadata: Invalid value:
/// v1.ObjectMeta{Name:"x", …}`); times as decoded into the server's local zone (UTC).
pub(super) fn go_object_meta(meta: &Value) -> String {
    let empty = Map::new();
    let m = meta.as_object().unwrap_or(&empty);
    let text = |k: &str| go_quote(m.get(k).and_then(Value::as_str).unwrap_or(""));
    let int = |k: &str| m.get(k).and_then(Value::as_i64);
    let time = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .and_then(|t| crate::go_time::parse_rfc3339(t).ok())
            .map(|t| go_time_date(&t))
    };
    let string_map = |k: &str| match m.get(k).and_then(Value::as_object) {
        Some(o) if !o.is_empty() => {
            // `%#v` prints a map's keys sorted.
            let sorted: std::collections::BTreeMap<&String, &Value> = o.iter().collect();
            let items: Vec<String> = sorted
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v.as_str().unwrap_or(""))))
                .collect();
            format!("map[string]string{{{}}}", items.join(", "))
        }
        _ => "map[string]string(nil)".to_owned(),
    };
    let finalizers = match m.get("finalizers").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => {
            let items: Vec<String> = a
                .iter()
                .map(|v| go_quote(v.as_str().unwrap_or("")))
                .collect();
            format!("[]string{{{}}}", items.join(", "))
        }
        _ => "[]string(nil)".to_owned(),
    };
    let owners = match m.get("ownerReferences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => {
            let items: Vec<String> = a
                .iter()
                .map(|o| {
                    let f = |k: &str| go_quote(o.get(k).and_then(Value::as_str).unwrap_or(""));
                    let flag = |k: &str| match o.get(k).and_then(Value::as_bool) {
                        Some(_) => "(*bool)(0xc000000000)".to_owned(),
                        None => "(*bool)(nil)".to_owned(),
                    };
                    format!(
                        "v1.OwnerReference{{APIVersion:{}, Kind:{}, Name:{}, UID:{}, Controller:{}, BlockOwnerDeletion:{}}}",
                        f("apiVersion"),
                        f("kind"),
                        f("name"),
                        f("uid"),
                        flag("controller"),
                        flag("blockOwnerDeletion")
                    )
                })
                .collect();
            format!("[]v1.OwnerReference{{{}}}", items.join(", "))
        }
        _ => "[]v1.OwnerReference(nil)".to_owned(),
    };
    let managed = match m.get("managedFields").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => format!("[]v1.ManagedFieldsEntry{{…{} entries…}}", a.len()),
        _ => "[]v1.ManagedFieldsEntry(nil)".to_owned(),
    };
    format!(
        "v1.ObjectMeta{{Name:{}, GenerateName:{}, Namespace:{}, SelfLink:{}, UID:{}, ResourceVersion:{}, Generation:{}, CreationTimestamp:{}, DeletionTimestamp:{}, DeletionGracePeriodSeconds:{}, Labels:{}, Annotations:{}, OwnerReferences:{}, Finalizers:{}, ManagedFields:{}}}",
        text("name"),
        text("generateName"),
        text("namespace"),
        text("selfLink"),
        text("uid"),
        text("resourceVersion"),
        int("generation").unwrap_or(0),
        time("creationTimestamp").unwrap_or_else(|| "time.Date(1, time.January, 1, 0, 0, 0, 0, time.UTC)".to_owned()),
        time("deletionTimestamp").unwrap_or_else(|| "<nil>".to_owned()),
        match int("deletionGracePeriodSeconds") {
            Some(_) => "(*int64)(0xc000000000)",
            None => "(*int64)(nil)",
        },
        string_map("labels"),
        string_map("annotations"),
        owners,
        finalizers,
        managed,
    )
}

/// Go's `time.Time.GoString` of `t` in the server's zone (`time.Local`, which is UTC here).
fn go_time_date(t: &crate::go_time::GoTime) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let (days, secs) = (t.unix.div_euclid(86_400), t.unix.rem_euclid(86_400));
    let (y, mo, d) = crate::go_time::civil_from_days(days);
    let month = MONTHS[usize::try_from(mo - 1).unwrap_or(0).min(11)];
    format!(
        "time.Date({y}, time.{month}, {d}, {}, {}, {}, {}, time.Local)",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        t.nanos
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn metadata_is_empty_as_semantic_deep_equal_sees_it() {
        assert!(meta_is_empty(&Value::Null, &[]));
        assert!(meta_is_empty(
            &json!({"creationTimestamp": null, "labels": {}, "finalizers": [], "name": "",
                    "managedFields": [{"manager": "kubectl"}]}),
            &[]
        ));
        assert!(!meta_is_empty(&json!({"generation": 2}), &[]));
        assert!(!meta_is_empty(&json!({"namespace": "prod"}), &[]));
        assert!(meta_is_empty(&json!({"namespace": "prod"}), &["namespace"]));
    }

    /// Go's `%#v` of a `v1.ObjectMeta`: maps with sorted keys, times as `time.Date`.
    #[test]
    fn object_meta_as_go_prints_it() {
        let got = go_object_meta(&json!({
            "generateName": "g-",
            "creationTimestamp": "2024-05-01T12:03:04Z",
            "labels": {"b": "2", "a": "1"},
            "finalizers": ["x/y"],
        }));
        assert_eq!(
            got,
            "v1.ObjectMeta{Name:\"\", GenerateName:\"g-\", Namespace:\"\", SelfLink:\"\", UID:\"\", ResourceVersion:\"\", Generation:0, CreationTimestamp:time.Date(2024, time.May, 1, 12, 3, 4, 0, time.Local), DeletionTimestamp:<nil>, DeletionGracePeriodSeconds:(*int64)(nil), Labels:map[string]string{\"a\":\"1\", \"b\":\"2\"}, Annotations:map[string]string(nil), OwnerReferences:[]v1.OwnerReference(nil), Finalizers:[]string{\"x/y\"}, ManagedFields:[]v1.ManagedFieldsEntry(nil)}"
        );
    }

    #[test]
    fn kinds_and_versions_as_the_decoder_checks_them() {
        let err = |body: Value| match check_type(Review::Access, &body) {
            Err(KubeError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(check_type(Review::Access, &json!({})).is_ok());
        assert_eq!(
            err(json!({"kind": "Secret"})),
            "Secret in version \"v1\" cannot be handled as a SelfSubjectAccessReview: no kind \"Secret\" is registered for version \"authorization.k8s.io/v1\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        );
        assert_eq!(
            err(json!({"apiVersion": "v1"})),
            "SelfSubjectAccessReview in version \"v1\" cannot be handled as a SelfSubjectAccessReview: no kind \"SelfSubjectAccessReview\" is registered for version \"v1\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        );
        // A body that is not an object: its apiVersion and kind cannot be read.
        for (body, what) in [(&b"[]"[..], "array"), (b"\"str\"", "string")] {
            let e = crate::kube::objects::decode_shaped(
                body,
                &SELF_SUBJECT_ACCESS_REVIEW,
                "SelfSubjectAccessReview",
            )
            .unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("the object provided is unrecognized (must be of type SelfSubjectAccessReview): couldn't get version/kind; json parse error: json: cannot unmarshal {what} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}")
            );
        }
        assert!(check_type(
            Review::WhoAmI("v1beta1"),
            &json!({"apiVersion": "authentication.k8s.io/v1beta1", "kind": "SelfSubjectReview"})
        )
        .is_ok());
    }
}
