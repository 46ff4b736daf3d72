//! `GET /api/v1/namespaces/NAME`. Namespaces are not objects here: any valid namespace name
//! holds Secrets and none has to be created. This answers the one read of a namespace that
//! clients make on their own: kubectl, told a namespaced object is NotFound in a namespace
//! other than `default`, asks for the namespace, and prints `namespaces "x" not found`
//! instead of the object's error when that read is NotFound too.

use serde_json::{json, Value};

use super::request::Reply;
use super::status::Status;
use crate::access::AccessError;
use crate::names::Namespace;

/// The namespace `name`, Active, as kube-apiserver writes one created without labels or
/// finalizers of its own; NotFound for a name no namespace can have.
pub fn get(name: &str) -> Reply {
    if !Namespace::errors(name).is_empty() {
        let missing = AccessError::NamespaceNotFound(name.to_owned());
        return Reply::Status(Status::of_access(&missing));
    }
    Reply::ok(namespace(name))
}

fn namespace(name: &str) -> Value {
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_name_is_an_active_namespace_and_another_is_not_found() {
        let Reply::Json { code, body, .. } = get("team") else {
            panic!("not an object")
        };
        assert_eq!(code, 200);
        assert_eq!(body["metadata"]["name"], "team");
        assert_eq!(body["status"]["phase"], "Active");
        let Reply::Status(s) = get("Bad_NS") else {
            panic!("not a status")
        };
        assert_eq!(s.http_code(), 404);
        assert_eq!(s.message, "namespaces \"Bad_NS\" not found");
    }
}
