//! Discovery as kubectl reads it: legacy `/api`, `/apis`, `/api/v1` (plain `application/json`,
//! which every kubectl 1.27–1.33 accepts), the review groups, and `/version`.

use serde_json::{json, Value};

use super::absent::Absent;

/// The Kubernetes minor version this API answers as.
pub const KUBE_MINOR: &str = "30";

/// The verbs on Secrets.
pub const SECRET_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// `GET /api`: `APIVersions` with `v1`, served from `server_address`.
pub fn api_versions(server_address: &str) -> Value {
    json!({"kind":"APIVersions","versions":["v1"],
        "serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":server_address}]})
}

/// The API groups served besides the core group, and their versions (preferred first).
const GROUPS: [(&str, &[&str]); 2] = [
    ("authentication.k8s.io", &["v1", "v1beta1"]),
    ("authorization.k8s.io", &["v1"]),
];

/// One group as `/apis` lists it (an `APIGroup` without its kind).
fn group(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion":format!("{name}/{v}"),"version":v}))
        .collect();
    json!({"name":name,"versions":vs,"preferredVersion":vs[0].clone()})
}

/// `GET /apis`: the review groups.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = GROUPS.iter().map(|(n, v)| group(n, v)).collect();
    json!({"kind":"APIGroupList","apiVersion":"v1","groups":groups})
}

/// `GET /apis/<group>`: the group's `APIGroup` document; `None` for a group not served.
pub fn api_group(name: &str) -> Option<Value> {
    let (n, versions) = GROUPS.iter().find(|(n, _)| *n == name)?;
    let mut doc = json!({"kind":"APIGroup","apiVersion":"v1"});
    if let (Value::Object(d), Value::Object(g)) = (&mut doc, group(n, versions)) {
        d.extend(g);
    }
    Some(doc)
}

/// `GET /api/v1`: Secrets, `serviceaccounts/token` for `kubectl create token`, and the
/// collections keyward holds nothing of but kubectl reads on its own ([`Absent`]).
pub fn core_v1_resources() -> Value {
    json!({"kind":"APIResourceList","groupVersion":"v1","resources":[
        {"name":"secrets","singularName":"secret","namespaced":true,"kind":"Secret",
         "verbs":SECRET_VERBS,"storageVersionHash":"S6u1pOWzb84="},
        // `kubectl create token` (the service accounts themselves are not objects here).
        {"name":"serviceaccounts/token","singularName":"","namespaced":true,
         "group":"authentication.k8s.io","version":"v1","kind":"TokenRequest","verbs":["create"]},
        Absent::Events.discovery(),
        Absent::Services.discovery()]})
}

/// `GET /apis/<group>/<version>` for the review groups; `None` for any other.
pub fn group_resources(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = match (group, version) {
        ("authentication.k8s.io", "v1" | "v1beta1") => {
            vec![review("selfsubjectreviews", "SelfSubjectReview")]
        }
        ("authorization.k8s.io", "v1") => {
            let mut local = review("localsubjectaccessreviews", "LocalSubjectAccessReview");
            local["namespaced"] = true.into();
            // kube-apiserver's order: by name.
            vec![
                local,
                review("selfsubjectaccessreviews", "SelfSubjectAccessReview"),
                review("selfsubjectrulesreviews", "SelfSubjectRulesReview"),
                review("subjectaccessreviews", "SubjectAccessReview"),
            ]
        }
        _ => return None,
    };
    Some(json!({"kind":"APIResourceList","apiVersion":"v1",
        "groupVersion":format!("{group}/{version}"),"resources":resources}))
}

/// Every resource the discovery documents above list, as a client's REST mapper reads them:
/// (group, version, the resource's discovery entry), each group's preferred version first.
pub fn all_resources() -> Vec<(String, String, Value)> {
    let entries = |mut list: Value| match list["resources"].take() {
        Value::Array(resources) => resources,
        _ => Vec::new(),
    };
    let mut out: Vec<(String, String, Value)> = entries(core_v1_resources())
        .into_iter()
        .map(|r| (String::new(), "v1".to_owned(), r))
        .collect();
    let groups = api_group_list();
    for group in groups["groups"].as_array().into_iter().flatten() {
        let name = group["name"].as_str().unwrap_or_default();
        for version in group["versions"].as_array().into_iter().flatten() {
            let version = version["version"].as_str().unwrap_or_default();
            if let Some(list) = group_resources(name, version) {
                out.extend(
                    entries(list)
                        .into_iter()
                        .map(|r| (name.to_owned(), version.to_owned(), r)),
                );
            }
        }
    }
    out
}

fn review(name: &str, kind: &str) -> Value {
    json!({"name":name,"singularName":"","namespaced":false,"kind":kind,"verbs":["create"]})
}

/// `GET /version`: `version.Info` as kube-apiserver writes it (indented, in its field order).
pub fn version() -> Vec<u8> {
    /// `version.Info`, in its field order.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Info {
        major: &'static str,
        minor: &'static str,
        git_version: String,
        git_commit: &'static str,
        git_tree_state: &'static str,
        build_date: &'static str,
        go_version: &'static str,
        compiler: &'static str,
        platform: &'static str,
    }
    let info = Info {
        major: "1",
        minor: KUBE_MINOR,
        git_version: format!("v1.{KUBE_MINOR}.0-keyward-{}", env!("CARGO_PKG_VERSION")),
        git_commit: "",
        git_tree_state: "clean",
        build_date: "1970-01-01T00:00:00Z",
        go_version: "none",
        compiler: "rustc",
        platform: "linux/amd64",
    };
    // kube-apiserver writes it with `json.MarshalIndent(info, "", "  ")`, whoever asks.
    serde_json::to_vec_pretty(&info).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_secrets_and_the_reviews() {
        let v1 = core_v1_resources();
        assert_eq!(v1["resources"][0]["name"], "secrets");
        assert_eq!(v1["resources"][0]["verbs"].as_array().unwrap().len(), 8);
        assert_eq!(v1["resources"][1]["name"], "serviceaccounts/token");
        assert!(group_resources("authorization.k8s.io", "v1").is_some());
        assert!(group_resources("apps", "v1").is_none());
        assert_eq!(
            api_group_list()["groups"][0]["preferredVersion"]["version"],
            "v1"
        );
    }
}
