//! OpenAPI for kubectl: `/openapi/v2` as an empty protobuf document (kubectl 1.27/1.28 fetch it
//! eagerly and accept an empty message), and `/openapi/v3` with the core/v1 document: the
//! Secret schema with descriptions (for `kubectl explain`) and Secret operations whose PATCH
//! carries `x-kubernetes-group-version-kind` and the `fieldValidation` parameter, so that
//! kubectl 1.29+ validates on the server (`fieldValidation=Strict`).

use serde_json::{json, Value};

/// `Content-Type` of `/openapi/v2` (kube-openapi's, which Go's MIME parser accepts).
pub const V2_CONTENT_TYPE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The hash the v3 index names the core/v1 document by: of its content, as kube-apiserver's
/// (uppercase hex, here SHA-256), so that a client's cache of an older document is not used
/// once the document changes.
pub fn v3_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let doc = serde_json::to_vec(&v3_core_v1()).unwrap_or_default();
        hex::encode_upper(crate::crypto::sha256(&doc))
    })
}

/// `GET /openapi/v3`: the index.
pub fn v3_index() -> Value {
    json!({"paths":{"api/v1":{"serverRelativeURL":format!("/openapi/v3/api/v1?hash={}", v3_hash())}}})
}

fn gvk() -> Value {
    json!({"group":"","version":"v1","kind":"Secret"})
}

fn param(name: &str, description: &str) -> Value {
    json!({"name":name,"in":"query","description":description,"schema":{"type":"string","uniqueItems":true}})
}

fn operation(id: &str, action: &str, params: Vec<Value>, body: Option<&[&str]>) -> Value {
    let mut op = json!({
        "operationId": id,
        "tags": ["core_v1"],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(),
        "parameters": params,
        "responses": {"200": {"description":"OK","content":{"application/json":{"schema":{"$ref":"#/components/schemas/io.k8s.api.core.v1.Secret"}}}},
                      "401": {"description":"Unauthorized"}}
    });
    if let (Some(types), Some(m)) = (body, op.as_object_mut()) {
        let content: serde_json::Map<String, Value> = types
            .iter()
            .map(|t| {
                (
                    (*t).to_owned(),
                    json!({"schema":{"$ref":"#/components/schemas/io.k8s.api.core.v1.Secret"}}),
                )
            })
            .collect();
        m.insert(
            "requestBody".into(),
            json!({"content":content,"required":true}),
        );
    }
    op
}

fn write_params() -> Vec<Value> {
    vec![
        param("dryRun", "When present, indicates that modifications should not be persisted. Valid value: All."),
        param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
        param("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default), Strict."),
    ]
}

/// `GET /openapi/v3/api/v1`: the core/v1 document for Secrets.
pub fn v3_core_v1() -> Value {
    let mut patch_params = write_params();
    patch_params.push(param(
        "force",
        "Force is going to \"force\" Apply requests. It must be unset for non-apply patch requests.",
    ));
    let list_params = vec![
        param("labelSelector", "A selector to restrict the list of returned objects by their labels."),
        param("fieldSelector", "A selector to restrict the list of returned objects by their fields: metadata.name, metadata.namespace, type."),
        param("limit", "limit is a maximum number of responses to return for a list call."),
        param("continue", "The continue option should be set when retrieving more results from the server."),
        param("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from."),
        param("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
        param("timeoutSeconds", "Timeout for the list/watch call."),
        param("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
    ];
    json!({
      "openapi": "3.0.0",
      "info": {"title": "Kubernetes", "version": format!("v1.{}.0", super::discovery::KUBE_MINOR)},
      "paths": {
        "/api/v1/namespaces/{namespace}/secrets/{name}": {
          "get": operation("readCoreV1NamespacedSecret", "get", vec![], None),
          "put": operation("replaceCoreV1NamespacedSecret", "put", write_params(), Some(&["application/json", "application/yaml"])),
          "delete": operation("deleteCoreV1NamespacedSecret", "delete", vec![param("dryRun", "When present, indicates that modifications should not be persisted."), param("propagationPolicy", "Whether and how garbage collection will be performed.")], None),
          // No requestBody: client-side apply then computes its strategic merge patch from
          // kubectl's compiled-in Secret type, as the facts' minimal document proved.
          "patch": operation("patchCoreV1NamespacedSecret", "patch", patch_params, None),
          "parameters": [
            {"name":"name","in":"path","description":"name of the Secret","required":true,"schema":{"type":"string","uniqueItems":true}},
            {"name":"namespace","in":"path","description":"object name and auth scope, such as for teams and projects","required":true,"schema":{"type":"string","uniqueItems":true}}
          ]
        },
        "/api/v1/namespaces/{namespace}/secrets": {
          "get": operation("listCoreV1NamespacedSecret", "list", list_params.clone(), None),
          "post": operation("createCoreV1NamespacedSecret", "post", write_params(), Some(&["application/json", "application/yaml"])),
          "delete": operation("deleteCoreV1CollectionNamespacedSecret", "deletecollection", list_params.clone(), None),
          "parameters": [
            {"name":"namespace","in":"path","description":"object name and auth scope, such as for teams and projects","required":true,"schema":{"type":"string","uniqueItems":true}}
          ]
        },
        "/api/v1/secrets": {
          "get": operation("listCoreV1SecretForAllNamespaces", "list", list_params, None)
        }
      },
      "components": {"schemas": schemas()}
    })
}

fn string(description: &str) -> Value {
    json!({"type":"string","description":description})
}

fn string_map(description: &str) -> Value {
    json!({"type":"object","description":description,"additionalProperties":{"type":"string","default":""}})
}

fn schemas() -> Value {
    json!({
      "io.k8s.api.core.v1.Secret": {
        "type": "object",
        "description": "Secret holds secret data of a certain type. The total bytes of the values in the Data field must be less than MaxSecretSize bytes.",
        "x-kubernetes-group-version-kind": [gvk()],
        "properties": {
          "apiVersion": string("APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values."),
          "kind": string("Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase."),
          "metadata": {"description":"Standard object's metadata.","default":{},"allOf":[{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]},
          "data": {"type":"object","description":"Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4","additionalProperties":{"type":"string","format":"byte"}},
          "stringData": string_map("stringData allows specifying non-binary secret data in string form. It is provided as a write-only input field for convenience. All keys and values are merged into the data field on write, overwriting any existing values. The stringData field is never output when reading from the API."),
          "immutable": {"type":"boolean","description":"Immutable, if set to true, ensures that data stored in the Secret cannot be updated (only object metadata can be modified). If not set to true, the field can be modified at any time. Defaulted to nil."},
          "type": string("Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types")
        }
      },
      "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
          "name": string("Name must be unique within a namespace. Is required when creating resources. Cannot be updated."),
          "generateName": string("GenerateName is an optional prefix, used by the server, to generate a unique name ONLY IF the Name field has not been provided."),
          "namespace": string("Namespace defines the space within which each name must be unique. An empty namespace is equivalent to the \"default\" namespace."),
          "uid": string("UID is the unique in time and space value for this object. It is typically generated by the server on successful creation of a resource and is not allowed to change on PUT operations."),
          "resourceVersion": string("An opaque value that represents the internal version of this object that can be used by clients to determine when objects have changed. May be used for optimistic concurrency, change detection, and the watch operation on a resource or set of resources."),
          "creationTimestamp": {"type":"string","format":"date-time","description":"CreationTimestamp is a timestamp representing the server time when this object was created. Populated by the system. Read-only."},
          "labels": string_map("Map of string keys and values that can be used to organize and categorize (scope and select) objects."),
          "annotations": string_map("Annotations is an unstructured key value map stored with a resource that may be set by external tools to store and retrieve arbitrary metadata."),
          "finalizers": {"type":"array","description":"Must be empty before the object is deleted from the registry.","items":{"type":"string","default":""},"x-kubernetes-list-type":"set","x-kubernetes-patch-strategy":"merge"},
          "ownerReferences": {"type":"array","description":"List of objects depended by this object.","items":{"default":{},"allOf":[{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"}]},"x-kubernetes-list-type":"map","x-kubernetes-list-map-keys":["uid"],"x-kubernetes-patch-merge-key":"uid","x-kubernetes-patch-strategy":"merge"},
          "managedFields": {"type":"array","description":"ManagedFields maps workflow-id and version to the set of fields that are managed by that workflow.","items":{"default":{},"allOf":[{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry"}]},"x-kubernetes-list-type":"atomic"},
          "generation": {"type":"integer","format":"int64","description":"A sequence number representing a specific generation of the desired state."},
          "deletionTimestamp": {"type":"string","format":"date-time","description":"DeletionTimestamp is RFC 3339 date and time at which this resource will be deleted."},
          "deletionGracePeriodSeconds": {"type":"integer","format":"int64","description":"Number of seconds allowed for this object to gracefully terminate before it will be removed from the system."},
          "selfLink": string("Deprecated: selfLink is a legacy read-only field that is no longer populated by the system.")
        }
      },
      "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference": {
        "type": "object",
        "description": "OwnerReference contains enough information to let you identify an owning object. An owning object must be in the same namespace as the dependent, or be cluster-scoped, so there is no namespace field.",
        "required": ["apiVersion", "kind", "name", "uid"],
        "properties": {
          "apiVersion": {"type":"string","default":"","description":"API version of the referent."},
          "kind": {"type":"string","default":"","description":"Kind of the referent."},
          "name": {"type":"string","default":"","description":"Name of the referent."},
          "uid": {"type":"string","default":"","description":"UID of the referent."},
          "controller": {"type":"boolean","description":"If true, this reference points to the managing controller."},
          "blockOwnerDeletion": {"type":"boolean","description":"If true, AND if the owner has the \"foregroundDeletion\" finalizer, then the owner cannot be deleted from the key-value store until this reference is removed."}
        },
        "x-kubernetes-map-type": "atomic"
      },
      "io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry": {
        "type": "object",
        "description": "ManagedFieldsEntry is a workflow-id, a FieldSet and the group version of the resource that the fieldset applies to.",
        "properties": {
          "manager": string("Manager is an identifier of the workflow managing these fields."),
          "operation": string("Operation is the type of operation which lead to this ManagedFieldsEntry being created. The only valid values for this field are 'Apply' and 'Update'."),
          "apiVersion": string("APIVersion defines the version of this resource that this field set applies to."),
          "time": {"type":"string","format":"date-time","description":"Time is the timestamp of when the ManagedFields entry was added."},
          "fieldsType": string("FieldsType is the discriminator for the different fields format and version. There is currently only one possible value: \"FieldsV1\""),
          "fieldsV1": {"description":"FieldsV1 holds the first JSON version format as described in the \"FieldsV1\" type.","allOf":[{"$ref":"#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1"}]},
          "subresource": string("Subresource is the name of the subresource used to update that object, or empty string if the object was updated through the main resource.")
        }
      },
      "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": {
        "type": "object",
        "description": "FieldsV1 stores a set of fields in a data structure like a Trie, in JSON format."
      }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operation_tells_kubectl_to_validate_on_the_server() {
        let doc = v3_core_v1();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Secret");
        let params = patch["parameters"].as_array().unwrap();
        assert!(params.iter().any(|p| p["name"] == "fieldValidation"));
        let schema = &doc["components"]["schemas"]["io.k8s.api.core.v1.Secret"];
        assert!(schema["x-kubernetes-group-version-kind"].is_array());
        assert!(v3_index()["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash="));
    }
}
