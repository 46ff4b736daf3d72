//! The self reviews kubectl's `auth` commands post: `SelfSubjectAccessReview` (`auth can-i`),
//! `SelfSubjectRulesReview` (`auth can-i --list`) and `SelfSubjectReview` (`auth whoami`),
//! read from the request's JSON (a protobuf body is decoded to JSON first) and answered by the
//! access layer's reviews, returned as the request object with its `status` filled.

use serde_json::{json, Value};

use super::KubeError;
use crate::access::{Access, RequestContext};
use crate::authz::review::{NonResourceAttributes, ResourceAttributes};
use crate::authz::{go_quote, AccessReviewSpec};

/// Which review a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// `authorization.k8s.io/v1` `selfsubjectaccessreviews`.
    Access,
    /// `authorization.k8s.io/v1` `selfsubjectrulesreviews`.
    Rules,
    /// `authentication.k8s.io/{v1,v1beta1}` `selfsubjectreviews` (the version given).
    WhoAmI(&'static str),
}

impl Review {
    /// The review at `/apis/<group>/<version>/<resource>`, if any.
    pub fn at(group: &str, version: &str, resource: &str) -> Option<Review> {
        match (group, version, resource) {
            ("authorization.k8s.io", "v1", "selfsubjectaccessreviews") => Some(Review::Access),
            ("authorization.k8s.io", "v1", "selfsubjectrulesreviews") => Some(Review::Rules),
            ("authentication.k8s.io", "v1", "selfsubjectreviews") => Some(Review::WhoAmI("v1")),
            ("authentication.k8s.io", "v1beta1", "selfsubjectreviews") => {
                Some(Review::WhoAmI("v1beta1"))
            }
            _ => None,
        }
    }

    /// Answers `body` for the caller `ctx`.
    pub async fn answer(
        self,
        access: &Access,
        ctx: &RequestContext,
        body: Value,
    ) -> Result<Value, KubeError> {
        let spec = body.get("spec").cloned().unwrap_or(Value::Null);
        let str_at = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let (kind, api_version, status) = match self {
            Review::Access => {
                // A `null` attribute is an absent one (a nil pointer in kube-apiserver).
                let present = |k: &str| spec.get(k).filter(|v| !v.is_null());
                let invalid = |field: &str, message: String| KubeError::Invalid {
                    kind: "SelfSubjectAccessReview.authorization.k8s.io".into(),
                    name: String::new(),
                    causes: vec![crate::names::FieldError::new(field, message)],
                };
                let spec = match (present("resourceAttributes"), present("nonResourceAttributes")) {
                    // The value as Go's `%#v` prints the internal type.
                    (Some(_), Some(n)) => {
                        return Err(invalid(
                            "spec.nonResourceAttributes",
                            format!(
                                "Invalid value: authorization.NonResourceAttributes{{Path:{}, Verb:{}}}: cannot be specified in combination with resourceAttributes",
                                go_quote(&str_at(n, "path")),
                                go_quote(&str_at(n, "verb"))
                            ),
                        ))
                    }
                    (Some(r), None) => AccessReviewSpec::Resource(ResourceAttributes {
                        namespace: str_at(r, "namespace"),
                        verb: str_at(r, "verb"),
                        group: str_at(r, "group"),
                        version: str_at(r, "version"),
                        resource: str_at(r, "resource"),
                        subresource: str_at(r, "subresource"),
                        name: str_at(r, "name"),
                    }),
                    (None, Some(n)) => AccessReviewSpec::NonResource(NonResourceAttributes {
                        path: str_at(n, "path"),
                        verb: str_at(n, "verb"),
                    }),
                    (None, None) => {
                        return Err(invalid(
                            "spec.resourceAttributes",
                            "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
                        ))
                    }
                };
                let s = access.access_review(ctx, &spec).await?;
                let mut status = json!({"allowed": s.allowed});
                if s.denied {
                    status["denied"] = true.into();
                }
                if !s.reason.is_empty() {
                    status["reason"] = s.reason.into();
                }
                if !s.evaluation_error.is_empty() {
                    status["evaluationError"] = s.evaluation_error.into();
                }
                ("SelfSubjectAccessReview", "authorization.k8s.io/v1", status)
            }
            Review::Rules => {
                let ns = str_at(&spec, "namespace");
                let s = access.rules_review(ctx, &ns).await?;
                let resource_rules: Vec<Value> = s
                    .resource_rules
                    .iter()
                    .map(|r| {
                        let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
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
                    status["evaluationError"] = s.evaluation_error.into();
                }
                ("SelfSubjectRulesReview", "authorization.k8s.io/v1", status)
            }
            Review::WhoAmI(version) => {
                let id = access.whoami(ctx).await?;
                let mut user = json!({"username": id.name, "groups": id.groups});
                if !id.uid.is_empty() {
                    user["uid"] = id.uid.into();
                }
                if !id.extra.is_empty() {
                    user["extra"] = json!(id.extra);
                }
                let api_version = if version == "v1" {
                    "authentication.k8s.io/v1"
                } else {
                    "authentication.k8s.io/v1beta1"
                };
                ("SelfSubjectReview", api_version, json!({"userInfo": user}))
            }
        };
        let mut out = json!({"kind": kind, "apiVersion": api_version,
            "metadata": {"creationTimestamp": null}});
        if !spec.is_null() {
            out["spec"] = spec;
        }
        out["status"] = status;
        Ok(out)
    }
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
    }
}
