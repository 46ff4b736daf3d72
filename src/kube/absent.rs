//! Events and Services: collections every kube-apiserver serves and keyward holds none of.
//! kubectl reads them on its own — `kubectl events` (also `--for secret/NAME` and `--watch`)
//! lists and watches Events, `kubectl cluster-info` lists the Services of `kube-system` — so
//! they are answered as a cluster that has none answers: an empty list (or Table, or
//! `PartialObjectMetadataList`) at the store's revision, a watch that stays open with nothing to
//! send, NotFound for a name. Nothing is written to them: discovery lists `get`, `list` and
//! `watch`, and any other method is 405. The router authorizes and records these requests as
//! every other (`list events`, `get services`, ...); their options are checked as
//! kube-apiserver checks a list's or watch's.

use serde_json::{json, Value};

use super::request::{Form, KubeRequest, Reply};
use super::status::{Details, Status};
use super::table::{self, IncludeObject, AGE_DOC, NAME_DOC};
use super::KubeError;
use crate::access::Access;
use crate::authz::go_quote;
use crate::store::{FieldSelector, Selector};

/// A collection keyward holds nothing of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    /// `events` (core/v1 Event).
    Events,
    /// `services` (core/v1 Service).
    Services,
}

impl Absent {
    /// The collection named `resource` in a core/v1 path, if it is one of these.
    pub fn of(resource: &str) -> Option<Absent> {
        match resource {
            "events" => Some(Absent::Events),
            "services" => Some(Absent::Services),
            _ => None,
        }
    }

    /// The resource, as in the path.
    pub fn resource(self) -> &'static str {
        match self {
            Absent::Events => "events",
            Absent::Services => "services",
        }
    }

    /// The Kind.
    pub fn kind(self) -> &'static str {
        match self {
            Absent::Events => "Event",
            Absent::Services => "Service",
        }
    }

    /// The fields a field selector may name (kube-apiserver 1.30's field label conversions).
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Absent::Events => &[
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
                "metadata.namespace",
                "metadata.name",
            ],
            Absent::Services => &["metadata.namespace", "metadata.name"],
        }
    }

    /// The discovery entry of the collection (`GET /api/v1`).
    pub fn discovery(self) -> Value {
        let (singular, short) = match self {
            Absent::Events => ("event", "ev"),
            Absent::Services => ("service", "svc"),
        };
        let mut d = json!({"name": self.resource(), "singularName": singular, "namespaced": true,
            "kind": self.kind(), "verbs": ["get", "list", "watch"], "shortNames": [short]});
        // Services are in the `all` category, as upstream lists them (`kubectl get all`).
        if self == Absent::Services {
            d["categories"] = json!(["all"]);
        }
        d
    }

    /// The column definitions of the collection's Table: names, order and priorities as
    /// kube-apiserver's printers define them, descriptions from the API documentation
    /// (shortened for Services' spec fields).
    fn columns(self) -> Value {
        let col = |name: &str, priority: u8, description: &str| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": "string", "format": format,
                "description": description, "priority": priority})
        };
        match self {
            Absent::Events => json!([
                col("Last Seen", 0, "The time at which the most recent occurrence of this event was recorded."),
                col("Type", 0, "Type of this event (Normal, Warning), new types could be added in the future"),
                col("Reason", 0, "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
                col("Object", 0, "The object that this event is about."),
                col("Subobject", 1, "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object."),
                col("Source", 1, "The component reporting this event. Should be a short machine understandable string."),
                col("Message", 0, "A human-readable description of the status of this operation."),
                col("First Seen", 1, "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
                col("Count", 1, "The number of times this event has occurred."),
                col("Name", 1, NAME_DOC),
            ]),
            Absent::Services => json!([
                col("Name", 0, NAME_DOC),
                col("Type", 0, "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer."),
                col("Cluster-IP", 0, "clusterIP is the IP address of the service and is usually assigned randomly."),
                col("External-IP", 0, "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system."),
                col("Port(s)", 0, "The list of ports that are exposed by this service."),
                col("Age", 0, AGE_DOC),
                col("Selector", 1, "Route service traffic to pods with label keys and values matching this selector."),
            ]),
        }
    }
}

/// `GET .../events` or `.../services`: the empty list at the store's revision, in the form
/// `Accept` asks for, once its options are checked.
pub async fn list(access: &Access, req: &KubeRequest, what: Absent) -> Result<Reply, KubeError> {
    Selector::parse(req.param("labelSelector").unwrap_or("")).map_err(KubeError::BadRequest)?;
    FieldSelector::parse_for(req.param("fieldSelector").unwrap_or(""), what.fields())
        .map_err(KubeError::BadRequest)?;
    req.int64("timeoutSeconds")?;
    let limit = req.int64("limit")?.unwrap_or(0);
    let cont = req.param("continue").filter(|c| !c.is_empty());
    super::secrets::list_revision(req, cont.is_some(), usize::try_from(limit).unwrap_or(0))?;
    // No list here ever handed out a continue token.
    if cont.is_some() {
        return Err(KubeError::BadRequest(
            "invalid continue token: continue key is not valid".into(),
        ));
    }
    IncludeObject::of_request(req.param("includeObject"), &req.accept)?;
    let metadata = table::wants_metadata(&req.accept);
    if metadata == Some(Form::Metadata) {
        return Err(KubeError::NotAcceptableForm(match what {
            Absent::Events => "you requested PartialObjectMetadata, but the requested object is a list (*core.EventList)",
            Absent::Services => "you requested PartialObjectMetadata, but the requested object is a list (*core.ServiceList)",
        }));
    }
    let rv = access.current_revision().await?.get().to_string();
    if table::wants_table(&req.accept) {
        return Ok(Reply::Table(json!({
            "kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": rv},
            "columnDefinitions": what.columns(), "rows": [],
        })));
    }
    let (kind, api_version) = match metadata {
        Some(_) => ("PartialObjectMetadataList".to_owned(), "meta.k8s.io/v1"),
        None => (format!("{}List", what.kind()), "v1"),
    };
    Ok(Reply::ok(json!({
        "kind": kind, "apiVersion": api_version,
        "metadata": {"resourceVersion": rv}, "items": [],
    })))
}

/// `GET .../events/NAME` or `.../services/NAME`: NotFound, as for any name nothing holds.
pub fn get(what: Absent, name: &str) -> Reply {
    let mut s = Status::failure(
        404,
        "NotFound",
        format!("{} {} not found", what.resource(), go_quote(name)),
    );
    s.details = Some(Details {
        name: name.to_owned(),
        kind: what.resource().to_owned(),
        ..Details::default()
    });
    Reply::Status(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_collections_and_their_fields() {
        assert_eq!(Absent::of("events"), Some(Absent::Events));
        assert_eq!(Absent::of("services"), Some(Absent::Services));
        assert_eq!(Absent::of("secrets"), None);
        assert!(FieldSelector::parse_for(
            "involvedObject.kind=Secret,involvedObject.apiVersion=v1,involvedObject.name=s1",
            Absent::Events.fields()
        )
        .is_ok());
        assert_eq!(
            FieldSelector::parse_for("spec.type=ClusterIP", Absent::Services.fields()),
            Err("field label not supported: spec.type".to_owned())
        );
        let Reply::Status(s) = get(Absent::Events, "e1") else {
            panic!("not a status")
        };
        assert_eq!(s.http_code(), 404);
        assert_eq!(s.message, "events \"e1\" not found");
        let cols = Absent::Events.columns();
        assert_eq!(cols.as_array().map(Vec::len), Some(10));
        assert_eq!(Absent::Services.discovery()["shortNames"][0], "svc");
        assert_eq!(Absent::Services.discovery()["categories"][0], "all");
    }
}
