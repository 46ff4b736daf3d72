//! What a request asks for, read from its method, path and query alone, as kube-apiserver's
//! `RequestInfoFactory` reads it before authorization: a resource request (`/api/v1/...`,
//! `/apis/GROUP/VERSION/...`) names a verb, group, version, namespace, resource, name and
//! subresource; anything else (discovery, OpenAPI, a path nothing serves) is a non-resource
//! request, authorized by its path and the lower-case HTTP method. Every request through the
//! Kubernetes API is authorized and audited with what this finds, whether or not keyward
//! serves the path.

use std::collections::BTreeMap;

use http::Method;

use super::request::go_bool;
use crate::authn::Identity;
use crate::authz::Attributes;

/// A request as RBAC and the audit log see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; for
    /// a non-resource request the lower-case method.
    pub verb: String,
    /// The URL's path.
    pub path: String,
    /// What a resource request names; `None` for a non-resource request.
    pub resource: Option<ResourceInfo>,
}

/// The parts of a resource request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group ("" for the core group under `/api`).
    pub group: String,
    /// API version, e.g. `v1`.
    pub version: String,
    /// Namespace ("" for cluster scope and for requests across namespaces).
    pub namespace: String,
    /// Resource (plural), e.g. `secrets`.
    pub resource: String,
    /// Object name; for a list or watch, the name a `metadata.name=NAME` field selector asks
    /// for.
    pub name: String,
    /// Subresource, e.g. `status`.
    pub subresource: String,
}

/// Namespace subresources: `/api/v1/namespaces/NS/status` is the namespace's status, not a
/// resource called `status` in it.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl RequestInfo {
    /// Reads `method`, `path` and the decoded `query` as kube-apiserver does.
    pub fn parse(method: &Method, path: &str, query: &BTreeMap<String, String>) -> RequestInfo {
        let non_resource = RequestInfo {
            verb: method.as_str().to_ascii_lowercase(),
            path: path.to_owned(),
            resource: None,
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        // `/api/v1/RESOURCE...` or `/apis/GROUP/VERSION/RESOURCE...`: at least three parts.
        let (group, rest) = match parts.as_slice() {
            ["api", rest @ ..] if rest.len() >= 2 => ("", rest),
            ["apis", group, rest @ ..] if rest.len() >= 2 => (*group, rest),
            _ => return non_resource,
        };
        let (version, mut rest) = (rest[0], &rest[1..]);
        // `/api/v1/watch/...` and `/api/v1/proxy/...` name their verb in the path.
        let mut verb = match rest {
            ["watch" | "proxy", more @ ..] if !more.is_empty() => {
                let v = rest[0];
                rest = more;
                v
            }
            ["watch" | "proxy"] => return non_resource,
            _ => match *method {
                Method::POST => "create",
                Method::GET | Method::HEAD => "get",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => "",
            },
        }
        .to_owned();
        let mut namespace = "";
        if rest[0] == "namespaces" && rest.len() > 1 {
            namespace = rest[1];
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        let mut info = ResourceInfo {
            group: group.to_owned(),
            version: version.to_owned(),
            namespace: namespace.to_owned(),
            resource: rest[0].to_owned(),
            name: rest.get(1).map_or("", |n| *n).to_owned(),
            subresource: String::new(),
        };
        if rest.len() >= 3 && verb != "proxy" {
            info.subresource = rest[2].to_owned();
        }
        if info.name.is_empty() && verb == "get" {
            let (watch, name) = list_options(query);
            verb = if watch { "watch" } else { "list" }.to_owned();
            info.name = name.unwrap_or_default();
        }
        if info.name.is_empty() && verb == "delete" {
            verb = "deletecollection".to_owned();
        }
        RequestInfo {
            verb,
            path: path.to_owned(),
            resource: Some(info),
        }
    }

    /// The request's attributes for `user`.
    pub fn attributes(&self, user: Identity) -> Attributes {
        match &self.resource {
            None => Attributes::non_resource(user, &self.verb, &self.path),
            Some(r) => Attributes::resource(user, &self.verb, &r.resource)
                .with_group(&r.group)
                .with_namespace(&r.namespace)
                .with_name(&r.name)
                .with_subresource(&r.subresource),
        }
    }
}

/// Whether a collection GET is a watch, and the name its field selector asks for, as
/// kube-apiserver decodes `ListOptions` for its request info: a boolean always decodes
/// ([`go_bool`]), and when an integer or a selector does not, the request has no name.
fn list_options(query: &BTreeMap<String, String>) -> (bool, Option<String>) {
    let param = |k: &str| query.get(k).map(String::as_str);
    let integer = |k: &str| param(k).is_none_or(|v| v.parse::<i64>().is_ok());
    let name = selected_name(param("fieldSelector").unwrap_or(""));
    let decoded = ["limit", "timeoutSeconds"].iter().all(|k| integer(k))
        && crate::store::Selector::parse(param("labelSelector").unwrap_or("")).is_ok();
    let name = if decoded { name.flatten() } else { None };
    (go_bool(param("watch")), name)
}

/// The value of the first `metadata.name=` (or `==`) term of field selector `s` in sorted order
/// ([`crate::store::fields::terms`]), if `s` parses as a field selector (`Ok(None)` without
/// such a term) and the value is a valid path segment (not `.` or `..`, no `/` or `%`):
/// kube-apiserver's `RequiresExactMatch`.
fn selected_name(s: &str) -> Option<Option<String>> {
    let found = crate::store::fields::terms(s)
        .ok()?
        .into_iter()
        .find(|(field, _, negated)| !negated && field == "metadata.name")
        .map(|(_, value, _)| value);
    Some(found.filter(|n| crate::names::path_segment_problems(n).is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A method, path and query, and the request they make (`show`).
    type Case = (
        Method,
        &'static str,
        Vec<(&'static str, &'static str)>,
        &'static str,
    );

    fn info(method: Method, path: &str, query: &[(&str, &str)]) -> RequestInfo {
        let q = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        RequestInfo::parse(&method, path, &q)
    }

    fn resource(verb: &str, group: &str, ns: &str, res: &str, name: &str, sub: &str) -> String {
        format!("{verb} {group}/{ns}/{res}/{name}/{sub}")
    }

    fn show(i: &RequestInfo) -> String {
        match &i.resource {
            None => format!("{} path {}", i.verb, i.path),
            Some(r) => resource(
                &i.verb,
                &r.group,
                &r.namespace,
                &r.resource,
                &r.name,
                &r.subresource,
            ),
        }
    }

    /// Request shapes as kube-apiserver's `RequestInfoFactory` reads them: collections and
    /// named objects, watch parameters, a field selector's name (and options that keep it
    /// from counting), namespaces and their subresources, `/api/v1/watch/`, other groups, and
    /// non-resource paths.
    #[test]
    fn requests_are_read_as_kube_apiserver_reads_them() {
        let cases: Vec<Case> = vec![
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets/db",
                vec![],
                "get /prod/secrets/db/",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![],
                "list /prod/secrets//",
            ),
            (Method::GET, "/api/v1/secrets", vec![], "list //secrets//"),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("watch", "true")],
                "watch /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("watch", "1")],
                "watch /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("watch", "false")],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("watch", "yes")],
                "watch /prod/secrets//",
            ),
            // A boolean always decodes: anything but 0 and false (any case) is true, the
            // empty value included (`Convert_Slice_string_To_bool`).
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("watch", "")],
                "watch /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("watch", "f")],
                "watch /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("watch", "fAlSe")],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![
                    ("fieldSelector", "metadata.name=db"),
                    ("allowWatchBookmarks", "maybe"),
                ],
                "list /prod/secrets/db/",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("fieldSelector", "metadata.name=db"), ("limit", "")],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("watch", "False"), ("limit", "x")],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("watch", "True"), ("limit", "x")],
                "watch /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("limit", "x")],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("fieldSelector", "metadata.name=db")],
                "list /prod/secrets/db/",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![
                    ("fieldSelector", "type=Opaque,metadata.name==db"),
                    ("watch", "true"),
                ],
                "watch /prod/secrets/db/",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("fieldSelector", "metadata.name!=db")],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("fieldSelector", "metadata.name=a/b")],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("fieldSelector", "metadata.name=..")],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("fieldSelector", "metadata.name=db"), ("limit", "x")],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![
                    ("fieldSelector", "metadata.name=db"),
                    ("labelSelector", "a in ("),
                ],
                "list /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/secrets",
                vec![("fieldSelector", "bogus,metadata.name=db")],
                "list /prod/secrets//",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/prod/secrets",
                vec![("fieldSelector", "metadata.name=db")],
                "deletecollection /prod/secrets//",
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/prod/secrets/db",
                vec![],
                "delete /prod/secrets/db/",
            ),
            (
                Method::POST,
                "/api/v1/namespaces/prod/secrets",
                vec![],
                "create /prod/secrets//",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/prod/secrets/db",
                vec![],
                "update /prod/secrets/db/",
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/prod/secrets/db",
                vec![],
                "patch /prod/secrets/db/",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/prod/secrets",
                vec![],
                "update /prod/secrets//",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/pods/p/log",
                vec![],
                "get /prod/pods/p/log",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod",
                vec![],
                "get /prod/namespaces/prod/",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/prod/status",
                vec![],
                "get /prod/namespaces/prod/status",
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                vec![],
                "list //namespaces//",
            ),
            (
                Method::POST,
                "/api/v1/namespaces",
                vec![],
                "create //namespaces//",
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/prod/secrets",
                vec![],
                "watch /prod/secrets//",
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/prod/deployments/d",
                vec![],
                "get apps/prod/deployments/d/",
            ),
            (
                Method::POST,
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                vec![],
                "create authorization.k8s.io//selfsubjectaccessreviews//",
            ),
            (Method::GET, "/api", vec![], "get path /api"),
            (Method::GET, "/api/v1", vec![], "get path /api/v1"),
            (Method::GET, "/apis", vec![], "get path /apis"),
            (Method::GET, "/apis/apps", vec![], "get path /apis/apps"),
            (
                Method::GET,
                "/apis/apps/v1",
                vec![],
                "get path /apis/apps/v1",
            ),
            (
                Method::GET,
                "/openapi/v3/api/v1",
                vec![],
                "get path /openapi/v3/api/v1",
            ),
            (Method::GET, "/version", vec![], "get path /version"),
            (Method::POST, "/nope", vec![], "post path /nope"),
            (Method::GET, "/", vec![], "get path /"),
        ];
        for (method, path, query, want) in cases {
            assert_eq!(
                show(&info(method.clone(), path, &query)),
                want,
                "{method} {path} {query:?}"
            );
        }
    }

    #[test]
    fn attributes_carry_what_was_read() {
        let user = Identity::new("app", "", vec![]);
        let q = [("fieldSelector", "metadata.name=db"), ("watch", "1")];
        let a = info(Method::GET, "/api/v1/namespaces/prod/secrets", &q).attributes(user.clone());
        assert_eq!(
            (
                a.verb.as_str(),
                a.namespace.as_str(),
                a.name.as_str(),
                a.resource.as_str()
            ),
            ("watch", "prod", "db", "secrets")
        );
        assert!(a.is_resource_request());
        let a = info(Method::GET, "/apis", &[]).attributes(user);
        assert_eq!((a.verb.as_str(), a.path.as_deref()), ("get", Some("/apis")));
    }
}
