//! The reviews the Kubernetes API takes: `SelfSubjectAccessReview` (`kubectl auth can-i`),
//! `SelfSubjectRulesReview` (`auth can-i --list`), `SelfSubjectReview` (`auth whoami`), and
//! `SubjectAccessReview` / `LocalSubjectAccessReview` (may someone else do this?). A body is
//! read as kube-apiserver's create handler reads it (JSON, YAML or protobuf,
//! `fieldValidation`, type and validation errors in its words), answered by the access layer
//! (authorized as a `create` of the review and recorded), and returned with its `status`.

use serde_json::{json, Value};

use super::objects::{decode_shaped, FieldValidation, Shape};
use super::proto::strings;
use super::request::{KubeRequest, Reply};
use super::KubeError;
use crate::access::Access;
use crate::audit::AuditObject;
use crate::authn::Identity;
use crate::authz::review::{NonResourceAttributes, ResourceAttributes};
use crate::authz::{go_quote, AccessReviewSpec};
use crate::names::FieldError;

mod decode;

/// Which review a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// `authorization.k8s.io/v1` `selfsubjectaccessreviews`.
    Access,
    /// `authorization.k8s.io/v1` `selfsubjectrulesreviews`.
    Rules,
    /// `authentication.k8s.io/{v1,v1beta1}` `selfsubjectreviews` (the version given).
    WhoAmI(&'static str),
    /// `authorization.k8s.io/v1` `subjectaccessreviews` (cluster-scoped).
    Subject,
    /// `authorization.k8s.io/v1` `localsubjectaccessreviews` (in a namespace).
    LocalSubject,
}

impl Review {
    /// The cluster-scoped review at `/apis/<group>/<version>/<resource>`, if any (the local
    /// one is at `/apis/authorization.k8s.io/v1/namespaces/<ns>/localsubjectaccessreviews`).
    pub fn at(group: &str, version: &str, resource: &str) -> Option<Review> {
        match (group, version, resource) {
            ("authorization.k8s.io", "v1", "selfsubjectaccessreviews") => Some(Review::Access),
            ("authorization.k8s.io", "v1", "selfsubjectrulesreviews") => Some(Review::Rules),
            ("authorization.k8s.io", "v1", "subjectaccessreviews") => Some(Review::Subject),
            ("authentication.k8s.io", "v1", "selfsubjectreviews") => Some(Review::WhoAmI("v1")),
            ("authentication.k8s.io", "v1beta1", "selfsubjectreviews") => {
                Some(Review::WhoAmI("v1beta1"))
            }
            _ => None,
        }
    }

    /// The kind.
    pub fn kind(self) -> &'static str {
        match self {
            Review::Access => "SelfSubjectAccessReview",
            Review::Rules => "SelfSubjectRulesReview",
            Review::WhoAmI(_) => "SelfSubjectReview",
            Review::Subject => "SubjectAccessReview",
            Review::LocalSubject => "LocalSubjectAccessReview",
        }
    }

    /// The API version served.
    pub fn api_version(self) -> &'static str {
        match self {
            Review::WhoAmI("v1beta1") => "authentication.k8s.io/v1beta1",
            Review::WhoAmI(_) => "authentication.k8s.io/v1",
            _ => "authorization.k8s.io/v1",
        }
    }

    fn shape(self) -> &'static Shape {
        match self {
            Review::Access => &decode::SELF_SUBJECT_ACCESS_REVIEW,
            Review::Rules => &decode::SELF_SUBJECT_RULES_REVIEW,
            Review::WhoAmI(_) => &decode::SELF_SUBJECT_REVIEW,
            Review::Subject => &decode::SUBJECT_ACCESS_REVIEW,
            Review::LocalSubject => &decode::LOCAL_SUBJECT_ACCESS_REVIEW,
        }
    }

    /// Answers the POST `req` (to `namespace`'s path for [`Review::LocalSubject`]) for its
    /// caller: 201 with the review and its `status`.
    pub async fn answer(
        self,
        access: &Access,
        req: &KubeRequest,
        namespace: Option<&str>,
    ) -> Result<Reply, KubeError> {
        let kind = self.kind();
        let options = req.write_options("CreateOptions")?;
        let bytes = req.json_body(kind)?;
        let (mut body, strict, type_error) = decode_shaped(&bytes, self.shape(), kind)?;
        decode::check_type(self, &body)?;
        let version = self.api_version().rsplit('/').next().unwrap_or_default();
        let cannot = |why: String| {
            KubeError::BadRequest(format!(
                "{kind} in version {} cannot be handled as a {kind}: {why}",
                go_quote(version)
            ))
        };
        if let Some(e) = type_error {
            return Err(cannot(e));
        }
        let warnings = match options.validation {
            FieldValidation::Strict if !strict.is_empty() => {
                return Err(cannot(format!(
                    "strict decoding error: {}",
                    strict.join(", ")
                )))
            }
            FieldValidation::Warn => strict,
            _ => Vec::new(),
        };
        // `EnsureObjectNamespaceMatchesRequestNamespace`: the URL's namespace, or none.
        let given = body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let namespace = namespace.unwrap_or("");
        if !given.is_empty() && !namespace.is_empty() && given != namespace {
            return Err(KubeError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("namespace".into(), namespace.into());
        }
        let meta = body.get("metadata").cloned().unwrap_or(Value::Null);
        let spec = body.get("spec").cloned().unwrap_or(Value::Null);
        let invalid = |causes: Vec<FieldError>| KubeError::Invalid {
            kind: format!("{kind}.authorization.k8s.io"),
            name: String::new(),
            causes,
        };
        // The review as returned (`status` given) and as the audit log records it.
        let (kind, api_version) = (kind, self.api_version());
        let object = move |metadata: &Value, spec: Option<&Value>, status: Value| {
            let mut out = json!({"kind": kind, "apiVersion": api_version, "metadata": metadata});
            if let Some(spec) = spec {
                out["spec"] = spec.clone();
            }
            out["status"] = status;
            out
        };
        let audited = |v: Value| Some(AuditObject::json(v));
        let cluster = json!({"creationTimestamp": null});
        let out = match self {
            Review::Access | Review::Subject | Review::LocalSubject => {
                let mut causes = Vec::new();
                let attrs = access_attributes(&spec, &mut causes);
                // A self review asks about its caller; the others about the subject they name.
                let subject = (self != Review::Access).then(|| subject_of(&spec));
                if subject
                    .as_ref()
                    .is_some_and(|s| s.name.is_empty() && s.groups.is_empty())
                {
                    causes.push(FieldError::new(
                        "spec.user",
                        "Invalid value: \"\": at least one of user or group must be specified",
                    ));
                }
                let local = self == Review::LocalSubject;
                if local {
                    let spec_attrs = attrs.as_ref().map(|a| &a.1);
                    local_causes(&meta, &spec, spec_attrs, namespace, &mut causes);
                } else if !decode::meta_is_empty(&meta, &[]) {
                    causes.push(meta_error(&meta, "must be empty"));
                }
                let (Some((mut spec_json, attrs)), true) = (attrs, causes.is_empty()) else {
                    return Err(invalid(causes));
                };
                if let Some(subject) = &subject {
                    subject_json(subject, &mut spec_json);
                }
                let metadata = match local {
                    true => json!({"namespace": namespace, "creationTimestamp": null}),
                    false => cluster,
                };
                let record = |status| audited(object(&metadata, Some(&spec_json), status));
                let sent = || record(json!({"allowed": false}));
                let answered = |s: &_| record(access_status(s));
                let s = match &subject {
                    None => {
                        access
                            .access_review(&req.ctx, &attrs, sent, answered)
                            .await?
                    }
                    Some(subject) => {
                        let ns = local.then_some(namespace);
                        access
                            .subject_access_review(&req.ctx, ns, subject, &attrs, sent, answered)
                            .await?
                    }
                };
                object(&metadata, Some(&spec_json), access_status(&s))
            }
            Review::Rules => {
                let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
                let mut sent_spec = json!({});
                if !ns.is_empty() {
                    sent_spec["namespace"] = ns.into();
                }
                let empty =
                    json!({"resourceRules": null, "nonResourceRules": null, "incomplete": false});
                let sent = || audited(object(&cluster, Some(&sent_spec), empty));
                // kube-apiserver answers a new object: its status alone.
                let answered = |s: &_| audited(object(&cluster, Some(&json!({})), rules_status(s)));
                let s = access.rules_review(&req.ctx, ns, sent, answered).await?;
                object(&cluster, Some(&json!({})), rules_status(&s))
            }
            Review::WhoAmI(_) => {
                // kube-apiserver answers a new object, created now.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
                let created = json!({"creationTimestamp": crate::go_time::format_rfc3339_utc(now)});
                let sent = || audited(object(&cluster, None, json!({"userInfo": {}})));
                let answered = |id: &Identity| audited(object(&created, None, user_info(id)));
                let id = access.whoami(&req.ctx, sent, answered).await?;
                object(&created, None, user_info(&id))
            }
        };
        Ok(Reply::Json {
            code: 201,
            body: out,
            warnings,
        })
    }
}

/// `ValidateLocalSubjectAccessReview`'s own rules: metadata empty but for the namespace, the
/// resource attributes in that namespace, no non-resource attributes.
fn local_causes(
    meta: &Value,
    spec: &Value,
    attrs: Option<&AccessReviewSpec>,
    namespace: &str,
    causes: &mut Vec<FieldError>,
) {
    if !decode::meta_is_empty(meta, &["namespace"]) {
        causes.push(meta_error(meta, "must be empty except for namespace"));
    }
    if let Some(AccessReviewSpec::Resource(r)) = attrs {
        if r.namespace != namespace {
            causes.push(FieldError::new(
                "spec.resourceAttributes.namespace",
                format!(
                    "Invalid value: {}: must match metadata.namespace",
                    go_quote(&r.namespace)
                ),
            ));
        }
    }
    if let Some(n) = present(spec, "nonResourceAttributes") {
        causes.push(FieldError::new(
            "spec.nonResourceAttributes",
            format!(
                "Invalid value: {}: disallowed on this kind of request",
                go_non_resource(n)
            ),
        ));
    }
}

/// A `SelfSubjectReview`'s `status`: who the caller is.
fn user_info(id: &Identity) -> Value {
    // authentication/v1 UserInfo's field order: username, uid, groups, extra.
    let mut user = json!({"username": id.name});
    if !id.uid.is_empty() {
        user["uid"] = id.uid.clone().into();
    }
    user["groups"] = json!(id.groups);
    if !id.extra.is_empty() {
        user["extra"] = json!(id.extra);
    }
    json!({"userInfo": user})
}

/// `spec.<key>` unless absent or `null` (a nil pointer in kube-apiserver).
fn present<'a>(spec: &'a Value, key: &str) -> Option<&'a Value> {
    spec.get(key).filter(|v| !v.is_null())
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// The value of a `nonResourceAttributes` as Go's `%#v` prints the internal type.
fn go_non_resource(n: &Value) -> String {
    format!(
        "authorization.NonResourceAttributes{{Path:{}, Verb:{}}}",
        go_quote(&text(n, "path")),
        go_quote(&text(n, "verb"))
    )
}

/// `metadata: Invalid value: v1.ObjectMeta{…}: <why>`.
fn meta_error(meta: &Value, why: &str) -> FieldError {
    FieldError::new(
        "metadata",
        format!("Invalid value: {}: {why}", decode::go_object_meta(meta)),
    )
}

/// The attributes of an access review's spec (`ValidateSubjectAccessReviewSpec`'s first two
/// rules, their causes pushed to `causes`), with the spec as kube-apiserver returns them.
fn access_attributes(
    spec: &Value,
    causes: &mut Vec<FieldError>,
) -> Option<(Value, AccessReviewSpec)> {
    match (
        present(spec, "resourceAttributes"),
        present(spec, "nonResourceAttributes"),
    ) {
        (Some(_), Some(n)) => {
            causes.push(FieldError::new(
                "spec.nonResourceAttributes",
                format!(
                    "Invalid value: {}: cannot be specified in combination with resourceAttributes",
                    go_non_resource(n)
                ),
            ));
            None
        }
        (Some(r), None) => {
            let a = ResourceAttributes {
                namespace: text(r, "namespace"),
                verb: text(r, "verb"),
                group: text(r, "group"),
                version: text(r, "version"),
                resource: text(r, "resource"),
                subresource: text(r, "subresource"),
                name: text(r, "name"),
            };
            let out = strings(&[
                ("namespace", &a.namespace),
                ("verb", &a.verb),
                ("group", &a.group),
                ("version", &a.version),
                ("resource", &a.resource),
                ("subresource", &a.subresource),
                ("name", &a.name),
            ]);
            Some((
                json!({"resourceAttributes": out}),
                AccessReviewSpec::Resource(a),
            ))
        }
        (None, Some(n)) => {
            let a = NonResourceAttributes {
                path: text(n, "path"),
                verb: text(n, "verb"),
            };
            let out = strings(&[("path", &a.path), ("verb", &a.verb)]);
            Some((
                json!({"nonResourceAttributes": out}),
                AccessReviewSpec::NonResource(a),
            ))
        }
        (None, None) => {
            causes.push(FieldError::new(
                "spec.resourceAttributes",
                "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
            None
        }
    }
}

/// The user a `SubjectAccessReview` asks about, exactly as given (no group added).
fn subject_of(spec: &Value) -> Identity {
    let groups = spec
        .get("groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let mut id = Identity::new(text(spec, "user"), text(spec, "uid"), groups);
    if let Some(extra) = spec.get("extra").and_then(Value::as_object) {
        for (k, v) in extra {
            let values = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            id.extra.insert(k.clone(), values);
        }
    }
    id
}

/// Adds the subject's fields to a returned spec, in `SubjectAccessReviewSpec`'s order and
/// without the empty ones.
fn subject_json(subject: &Identity, spec: &mut Value) {
    if !subject.name.is_empty() {
        spec["user"] = subject.name.clone().into();
    }
    if !subject.groups.is_empty() {
        spec["groups"] = json!(subject.groups);
    }
    if !subject.extra.is_empty() {
        spec["extra"] = json!(subject.extra);
    }
    if !subject.uid.is_empty() {
        spec["uid"] = subject.uid.clone().into();
    }
}

fn access_status(s: &crate::authz::SubjectAccessReviewStatus) -> Value {
    let mut status = json!({"allowed": s.allowed});
    if s.denied {
        status["denied"] = true.into();
    }
    if !s.reason.is_empty() {
        status["reason"] = s.reason.clone().into();
    }
    if !s.evaluation_error.is_empty() {
        status["evaluationError"] = s.evaluation_error.clone().into();
    }
    status
}

fn rules_status(s: &crate::authz::SubjectRulesReviewStatus) -> Value {
    let resource_rules: Vec<Value> = s
        .resource_rules
        .iter()
        .map(|r| {
            let mut v =
                json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            v
        })
        .collect();
    let non_resource_rules: Vec<Value> = s
        .non_resource_rules
        .iter()
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    let mut status = json!({"resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules, "incomplete": s.incomplete});
    if !s.evaluation_error.is_empty() {
        status["evaluationError"] = s.evaluation_error.clone().into();
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_paths() {
        assert_eq!(
            Review::at("authorization.k8s.io", "v1", "selfsubjectaccessreviews"),
            Some(Review::Access)
        );
        assert_eq!(
            Review::at("authentication.k8s.io", "v1beta1", "selfsubjectreviews"),
            Some(Review::WhoAmI("v1beta1"))
        );
        assert_eq!(
            Review::at("authentication.k8s.io", "v1alpha1", "selfsubjectreviews"),
            None
        );
        assert_eq!(
            Review::at("authorization.k8s.io", "v1", "subjectaccessreviews"),
            Some(Review::Subject)
        );
        // Only in a namespace.
        assert_eq!(
            Review::at("authorization.k8s.io", "v1", "localsubjectaccessreviews"),
            None
        );
    }
}
