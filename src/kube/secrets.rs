//! The `secrets` resource: get, list, create, update (PUT), patch (strategic merge, JSON merge,
//! JSON patch, server-side apply), delete and deletecollection, each a thin handler that reads
//! the request, calls the guarded store ([`Access`]) and answers kube-apiserver's object,
//! list, Table or Status. Object semantics (strict decoding, patches, managedFields) are in
//! [`objects`](super::objects), [`patch`](mod@patch) and [`apply`].

use std::time::SystemTime;

use serde_json::{json, Value};

use super::apply;
use super::objects::{
    decode_secret, decode_secret_with, encode_secret, parse_patch, partial_object_metadata,
    FieldValidation,
};
use super::patch;
use super::request::{
    unsupported_media_type, yaml_to_json, Form, KubeRequest, Reply, WriteOptions,
};
use super::status::Status;
use super::table::{self, IncludeObject};
use super::yaml_keys;
use super::KubeError;
use crate::access::{Access, AccessError, AnswerView, Answered, DeletionAnswer, ListAt};
use crate::audit::AuditObject;
use crate::encryption::EncryptionError;
use crate::names::{FieldError, SecretName};
use crate::store::model::SecretId;
use crate::store::{
    FieldSelector, Preconditions, ResourceVersion, Scope, Secret, Selector, StoreError,
};

/// Most operations a JSON patch may carry (kube-apiserver's `maxJSONPatchOperations`).
const MAX_JSON_PATCH_OPS: usize = 10_000;

/// The four patch types.
const PATCH_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The Secret a path names.
pub fn secret_id(namespace: &str, name: &str) -> Result<SecretId, KubeError> {
    SecretId::parse(namespace, name).map_err(|causes| KubeError::Invalid {
        kind: "Secret".into(),
        name: name.to_owned(),
        causes,
    })
}

/// Why kube-apiserver's storage cannot key an object named `name` (its
/// `IsValidPathSegmentName`: not `.` or `..`, no `/` or `%`), as the 400 it answers a read,
/// change or delete of such a name with; `None` for a name it can key.
pub fn unkeyable_name(name: &str) -> Option<String> {
    let problems: Vec<String> = if name == "." || name == ".." {
        vec![format!("may not be '{name}'")]
    } else {
        ["/", "%"]
            .iter()
            .filter(|c| name.contains(**c))
            .map(|c| format!("may not contain '{c}'"))
            .collect()
    };
    (!problems.is_empty()).then(|| {
        format!(
            "Name parameter invalid: {}: {}",
            crate::authz::go_quote(name),
            problems.join(";")
        )
    })
}

/// Fills the object's namespace from the path, or refuses a mismatch, as kube-apiserver does:
/// a create (`name` None) with the words of `EnsureObjectNamespaceMatchesRequestNamespace`; an
/// update or patch (the name on the URL) with those of `checkName`, which also refuses an
/// object without a name or with another one.
fn check_path(s: &mut Secret, ns: &str, name: Option<&SecretName>) -> Result<(), KubeError> {
    let Some(name) = name else {
        if s.metadata.namespace.is_empty() {
            s.metadata.namespace = ns.to_owned();
        } else if s.metadata.namespace != ns {
            return Err(KubeError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request"
                    .into(),
            ));
        }
        return Ok(());
    };
    if s.metadata.name.is_empty() {
        return Err(KubeError::BadRequest(format!(
            "the name of the object ({name} based on URL) was undeterminable: name must be provided"
        )));
    }
    if s.metadata.name != name.as_str() {
        return Err(KubeError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            s.metadata.name
        )));
    }
    if s.metadata.namespace.is_empty() {
        s.metadata.namespace = ns.to_owned();
    } else if s.metadata.namespace != ns {
        return Err(KubeError::BadRequest(format!(
            "the namespace of the object ({}) does not match the namespace on the request ({ns})",
            s.metadata.namespace
        )));
    }
    Ok(())
}

/// `GET .../secrets/{name}`: the Secret, or a one-row Table.
pub async fn get(access: &Access, req: &KubeRequest, id: &SecretId) -> Result<Reply, KubeError> {
    let include = IncludeObject::of_request(req.param("includeObject"), &req.accept)?;
    // Refused before the read, so that the audit log records the 406 the client gets.
    let metadata = table::wants_metadata(&req.accept);
    if metadata == Some(Form::MetadataList) {
        return Err(KubeError::NotAcceptableForm(
            "you requested PartialObjectMetadataList, but the requested object is not a list (*core.Secret)",
        ));
    }
    answer_view(req, include, metadata.is_some());
    // A resourceVersion reads "not older than" it (kube-apiserver's watch cache); one that is
    // not a number is its storage's 500.
    let read = match resource_version(req)? {
        ResourceVersion::At(min) => {
            access
                .get_not_older_than(&req.ctx, &id.namespace, &id.name, min)
                .await
        }
        _ => access.get(&req.ctx, &id.namespace, &id.name, None).await,
    };
    let s = read.map_err(unreadable_named(access, id))?;
    if table::wants_table(&req.accept) {
        let rv = s.metadata.resource_version.clone();
        return Ok(Reply::Table(table::table(&[s], &rv, None, include, true)));
    }
    Ok(match metadata {
        Some(_) => Reply::ok(partial_object_metadata(&s)),
        None => Reply::ok(encode_secret(&s)),
    })
}

/// Has the audit log record a get's or list's answer in the form the client asked for: a
/// Table, or metadata only (the Secret or SecretList itself needs no view).
fn answer_view(req: &KubeRequest, include: IncludeObject, metadata: bool) {
    let table = table::wants_table(&req.accept);
    if !table && !metadata {
        return;
    }
    let view = AnswerView::new(move |answer| {
        let mut v = match (answer, table) {
            (Answered::Secret(s), true) => {
                table::table(&[s], &s.metadata.resource_version, None, include, true)
            }
            (Answered::List(l), true) => table::table(
                &l.items,
                &l.resource_version.to_string(),
                l.continue_token.as_deref(),
                include,
                true,
            ),
            (Answered::Secret(s), false) => partial_object_metadata(s),
            (Answered::List(l), false) => partial_object_metadata_list(l),
        };
        // ListMeta's remainingItemCount, which every form of the list carries.
        if let Answered::List(l) = answer {
            if let Some(n) = l.remaining_item_count {
                v["metadata"]["remainingItemCount"] = n.into();
            }
        }
        Some(AuditObject::json(v))
    });
    req.ctx.answering_reads_as(view);
}

/// The label and field selectors of a list, watch or deletecollection.
fn selectors(req: &KubeRequest) -> Result<(Selector, FieldSelector), KubeError> {
    let labels =
        Selector::parse(req.param("labelSelector").unwrap_or("")).map_err(KubeError::BadRequest)?;
    let fields = field_selector(req)?;
    Ok((labels, fields))
}

/// The request's `fieldSelector`; one that does not parse is kube-apiserver's 400.
pub fn field_selector(req: &KubeRequest) -> Result<FieldSelector, KubeError> {
    FieldSelector::parse(req.param("fieldSelector").unwrap_or("")).map_err(KubeError::BadRequest)
}

/// `GET .../secrets`: a SecretList, or a Table.
pub async fn list(access: &Access, req: &KubeRequest, ns: &Scope) -> Result<Reply, KubeError> {
    // ListOptions decode in kube-apiserver's field order: selectors, then the integers.
    let (labels, fields) = selectors(req)?;
    req.int64("timeoutSeconds")?;
    // No limit below 1, as its storage reads `limit`.
    let limit = req
        .int64("limit")?
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(0);
    let cont = req.param("continue").filter(|c| !c.is_empty());
    let at = list_revision(req, cont.is_some(), limit)?;
    // resourceVersion=0 is served whole from kube-apiserver's watch cache, which ignores
    // `limit`.
    // A list of one name in one namespace reads that one key, as kube-apiserver's registry does
    // (`MatchesSingle`): `limit` does not apply, and no continue token comes back.
    let single = matches!(ns, Scope::In(_)) && fields.name().is_some();
    let limit = if req.param("resourceVersion") == Some("0") || single {
        0
    } else {
        limit
    };
    let include = IncludeObject::of_request(req.param("includeObject"), &req.accept)?;
    // Refused before the read, so that the audit log records the 406 the client gets.
    let metadata = table::wants_metadata(&req.accept);
    if metadata == Some(Form::Metadata) {
        return Err(KubeError::NotAcceptableForm(
            "you requested PartialObjectMetadata, but the requested object is a list (*core.SecretList)",
        ));
    }
    answer_view(req, include, metadata.is_some());
    let count = fields.is_empty();
    let mut list = match access
        .list(&req.ctx, ns, &labels, &fields, limit, cont, at, count)
        .await
    {
        Err(AccessError::Store(StoreError::Gone(_))) if matches!(at, ListAt::Exact(_)) => {
            return Err(KubeError::Expired(
                "The resourceVersion for the provided list is too old.".into(),
            ))
        }
        Err(AccessError::Store(StoreError::Gone(_))) if cont.is_some() => {
            return Err(KubeError::Expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
            ))
        }
        Err(AccessError::Store(StoreError::BadContinue { why })) => {
            return Err(KubeError::BadRequest(format!("invalid continue token: {why}")))
        }
        other => other?,
    };
    list.items.retain(|s| fields.matches(s));
    let rv = list.resource_version.to_string();
    let mut out = if table::wants_table(&req.accept) {
        table::table(
            &list.items,
            &rv,
            list.continue_token.as_deref(),
            include,
            true,
        )
    } else if metadata.is_some() {
        partial_object_metadata_list(&list)
    } else {
        secret_list(&list.items, &rv, list.continue_token.as_deref())
    };
    // ListMeta's remainingItemCount, which every form of the list carries.
    if let Some(n) = list.remaining_item_count {
        out["metadata"]["remainingItemCount"] = n.into();
    }
    Ok(if table::wants_table(&req.accept) {
        Reply::Table(out)
    } else {
        Reply::ok(out)
    })
}

/// A page of a list as a `PartialObjectMetadataList`.
fn partial_object_metadata_list(list: &crate::store::SecretList) -> Value {
    let mut meta = json!({"resourceVersion": list.resource_version.to_string()});
    if let Some(c) = &list.continue_token {
        meta["continue"] = c.as_str().into();
    }
    let items: Vec<Value> = list
        .items
        .iter()
        .map(|s| partial_object_metadata(s))
        .collect();
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "items": items,
    })
}

/// A patch body read as JSON, or its syntax error in the words of the decoder kube-apiserver
/// reads the patch with first (they quote at most one character of the body): its strict
/// decode for field checks (not under Ignore; a strategic merge patch's without a prefix), else
/// the patch library's.
fn patch_json(
    body: &[u8],
    kind: PatchType,
    validation: FieldValidation,
) -> Result<Value, KubeError> {
    serde_json::from_slice(body).map_err(|e| {
        let why = crate::go_json::syntax_error(body)
            .unwrap_or_else(|| crate::redact::serde_values(&e.to_string()));
        let strict = validation != FieldValidation::Ignore;
        KubeError::BadRequest(match kind {
            PatchType::Strategic => why,
            PatchType::Json if !strict => why,
            PatchType::Merge if !strict => "Invalid JSON Patch".to_owned(),
            _ => format!("error decoding patch: {why}"),
        })
    })
}

/// A server-side apply's repeated YAML keys ([`yaml_keys::repeated_keys`]) under `validation`:
/// kube-apiserver's 400 under Strict, a warning each under Warn.
fn repeated_keys_checked(
    repeated: &[String],
    validation: FieldValidation,
) -> Result<Vec<String>, KubeError> {
    match validation {
        FieldValidation::Strict if !repeated.is_empty() => Err(KubeError::BadRequest(format!(
            "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  {}",
            repeated.join("\n  ")
        ))),
        FieldValidation::Warn => Ok(repeated.to_vec()),
        _ => Ok(Vec::new()),
    }
}

/// kube-apiserver's 422 for a patch whose result is not a Secret (a field of the wrong type,
/// `data` that is not base64): `patch: Invalid value: <value>: <why>`, the strategic merge
/// patch's base64 error in its unstructured converter's words. The value (the patch, or the
/// patched object) holds Secret values, so it is not repeated.
fn patched_undecodable(kind: PatchType, detail: &str) -> KubeError {
    let why = if kind == PatchType::Strategic && detail.starts_with("illegal base64") {
        format!("error decoding from json: {detail}")
    } else {
        detail.to_owned()
    };
    KubeError::Invalid {
        kind: String::new(),
        name: String::new(),
        causes: vec![FieldError::new(
            "patch",
            format!("Invalid value: \"<redacted>\": {why}"),
        )],
    }
}

/// `resourceVersion` and `resourceVersionMatch` of a list, checked as kube-apiserver's
/// `ValidateListOptions` checks them (422 naming `ListOptions.meta.k8s.io`), and a
/// `resourceVersion` beside a continue token refused as its storage refuses it.
pub(super) fn list_revision(
    req: &KubeRequest,
    continuing: bool,
    limit: usize,
) -> Result<ListAt, KubeError> {
    let rv = req.param("resourceVersion").unwrap_or("");
    let matching = req.param("resourceVersionMatch").unwrap_or("");
    let mut causes = Vec::new();
    let forbidden =
        |message: &str| FieldError::new("resourceVersionMatch", format!("Forbidden: {message}"));
    if !matching.is_empty() {
        if rv.is_empty() {
            causes.push(forbidden(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if continuing {
            causes.push(forbidden(
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
        if !matches!(matching, "Exact" | "NotOlderThan") {
            causes.push(FieldError::new(
                "resourceVersionMatch",
                format!(
                    "Unsupported value: {}: supported values: \"Exact\", \"NotOlderThan\", \"\"",
                    crate::authz::go_quote(matching)
                ),
            ));
        }
        if matching == "Exact" && rv == "0" {
            causes.push(forbidden(
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
    }
    if req.param("sendInitialEvents").is_some() {
        causes.push(FieldError::new(
            "sendInitialEvents",
            "Forbidden: sendInitialEvents is forbidden for list",
        ));
    }
    if !causes.is_empty() {
        return Err(list_options_invalid(causes));
    }
    if continuing && !rv.is_empty() {
        return Err(KubeError::BadRequest(
            "specifying resource version is not allowed when using continue".into(),
        ));
    }
    let parsed = resource_version(req)?;
    Ok(match (parsed, matching) {
        (ResourceVersion::At(r), "Exact") => ListAt::Exact(r),
        // The legacy case: a page at a revision, without a match rule, is read exactly at it
        // (kube-apiserver's storage, to which its watch cache hands such a list).
        (ResourceVersion::At(r), "") if limit > 0 => ListAt::Exact(r),
        (ResourceVersion::At(r), _) => ListAt::NotOlderThan(r),
        _ => ListAt::Current,
    })
}

/// A list's or watch's `resourceVersion`. One that is not a number fails in kube-apiserver's
/// storage (`ParseResourceVersion`), whose error its handlers pass on as a 500.
pub(super) fn resource_version(req: &KubeRequest) -> Result<ResourceVersion, KubeError> {
    let rv = req.param("resourceVersion").unwrap_or("");
    ResourceVersion::parse("resourceVersion", rv).map_err(|e| {
        let digits = !rv.is_empty() && rv.bytes().all(|b| b.is_ascii_digit());
        if digits && rv.parse::<u64>().is_ok() {
            return KubeError::BadRequest(e.to_string());
        }
        let why = if digits {
            "value out of range"
        } else {
            "invalid syntax"
        };
        let quoted = crate::authz::go_quote(rv);
        KubeError::Storage(format!(
            "resourceVersion: Invalid value: {quoted}: strconv.ParseUint: parsing {quoted}: {why}"
        ))
    })
}

/// kube-apiserver's 422 for list or watch options that break `ValidateListOptions`.
pub(super) fn list_options_invalid(causes: Vec<FieldError>) -> KubeError {
    KubeError::Invalid {
        kind: "ListOptions.meta.k8s.io".into(),
        name: String::new(),
        causes,
    }
}

fn secret_list<S: std::borrow::Borrow<Secret>>(items: &[S], rv: &str, cont: Option<&str>) -> Value {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = c.into();
    }
    // Items without `kind` and `apiVersion`: kube-apiserver leaves a list's items' type
    // fields empty (the list's own say what they are).
    let items: Vec<Value> = items
        .iter()
        .map(|s| {
            let mut v = encode_secret(s.borrow());
            if let Some(m) = v.as_object_mut() {
                m.shift_remove("kind");
                m.shift_remove("apiVersion");
            }
            v
        })
        .collect();
    json!({"kind":"SecretList","apiVersion":"v1","metadata":meta,"items":items})
}

/// Keeps the decoded Secret for the audit log, before any check refuses it (kube-apiserver's
/// `LogRequestObject`, right after decoding).
fn keep_for_audit(access: &Access, req: &KubeRequest, s: &Secret) {
    if access.auditor().is_enabled() {
        req.ctx.keep_request_object(AuditObject::secret(s));
    }
}

/// `POST .../secrets`: creates the Secret of the body (201). A namespace `ns` that is not
/// valid is the Secret's `metadata.namespace`, refused by its validation.
pub async fn create(access: &Access, req: &KubeRequest, ns: &str) -> Result<Reply, KubeError> {
    let opts = req.write_options("CreateOptions")?;
    let body = req.json_body("Secret")?;
    let decoded = decode_secret_with(
        &body,
        opts.validation,
        &req.yaml_repeated_keys(opts.validation),
    )?;
    keep_for_audit(access, req, &decoded.secret);
    let mut s = decoded.secret;
    check_path(&mut s, ns, None)?;
    if !crate::names::Namespace::errors(ns).is_empty() {
        // NamespaceLifecycle admission, after authorization and before validation.
        let attrs = req.info.attributes(req.ctx.user.clone());
        let refusal = AccessError::NamespaceNotFound(ns.to_owned());
        return Err(access
            .refuse_after_authorization(&req.ctx, &attrs, refusal)
            .await
            .into());
    }
    // kube-apiserver validates the object, then its storage refuses a set resourceVersion
    // with an error that is no API status (a 500); a dry run never reaches the storage, and
    // answers the object with the resourceVersion it was sent.
    let sent_version = std::mem::take(&mut s.metadata.resource_version);
    if !sent_version.is_empty() {
        let mut check = s.clone();
        crate::store::Store::prepare_create(&mut check)
            .map_err(|e| KubeError::from(AccessError::Store(e)))?;
        if !opts.dry_run {
            return Err(KubeError::Storage(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
    }
    apply::record_update(None, &mut s, &opts.manager, &now());
    let mut created = access.create(&req.ctx, s, opts.dry_run).await?;
    if !sent_version.is_empty() {
        created.metadata.resource_version = sent_version;
    }
    Ok(Reply::Json {
        code: 201,
        body: encode_secret(&created),
        warnings: decoded.warnings,
    })
}

/// `PUT .../secrets/{name}`, authorized as `update` (the read of the stored object for
/// `managedFields` too): replaces the Secret (a `resourceVersion` in the body is a
/// precondition).
pub async fn update(access: &Access, req: &KubeRequest, id: &SecretId) -> Result<Reply, KubeError> {
    let opts = req.write_options("UpdateOptions")?;
    let body = req.json_body("Secret")?;
    let decoded = decode_secret_with(
        &body,
        opts.validation,
        &req.yaml_repeated_keys(opts.validation),
    )?;
    keep_for_audit(access, req, &decoded.secret);
    let mut s = decoded.secret;
    check_path(&mut s, id.namespace.as_str(), Some(&id.name))?;
    // "0" asks for no condition, as kube-apiserver reads it (an unconditional update, which
    // Secrets allow); keyward.v1 refuses it, as a precondition names one version.
    if s.metadata.resource_version == "0" {
        s.metadata.resource_version.clear();
    }
    let live = access
        .read_for_update(&req.ctx, &id.namespace, &id.name)
        .await
        .map_err(unreadable_named(access, id))?;
    apply::record_update(Some(&live), &mut s, &opts.manager, &now());
    let updated = access.update(&req.ctx, s, opts.dry_run).await?;
    Ok(Reply::Json {
        code: 200,
        body: encode_secret(&updated),
        warnings: decoded.warnings,
    })
}

/// The patch type of a `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

fn invalid_patch_options(field: &str, message: &str) -> KubeError {
    KubeError::Invalid {
        kind: "PatchOptions.meta.k8s.io".into(),
        name: String::new(),
        causes: vec![FieldError::new(field, message)],
    }
}

/// `PATCH .../secrets/{name}`, authorized as `patch` (the read of the stored object too): the
/// patch applied to the stored object, written with its resourceVersion as precondition (retried if the object changed meanwhile, unless the patch
/// itself set a resourceVersion); server-side apply creates an absent object.
pub async fn patch(access: &Access, req: &KubeRequest, id: &SecretId) -> Result<Reply, KubeError> {
    let kind = match req.content_type.as_str() {
        "application/json-patch+json" => PatchType::Json,
        "application/merge-patch+json" => PatchType::Merge,
        "application/strategic-merge-patch+json" => PatchType::Strategic,
        "application/apply-patch+yaml" => PatchType::Apply,
        _ => return Err(unsupported_media_type(&PATCH_TYPES)),
    };
    let opts = req.write_options("PatchOptions")?;
    let force = req.flag("force");
    if kind == PatchType::Apply && !opts.manager_given {
        return Err(invalid_patch_options(
            "fieldManager",
            "Required value: is required for apply patch",
        ));
    }
    if kind != PatchType::Apply && force {
        return Err(invalid_patch_options(
            "force",
            "Forbidden: may not be specified for non-apply patch",
        ));
    }
    let body = if kind == PatchType::Apply {
        yaml_to_json(&req.body)?
    } else {
        req.body.to_vec()
    };
    // Read once: strictly (its duplicate and unknown fields noted) unless it is a server-side
    // apply, whose YAML is checked as it is read, or fields go unchecked.
    let strict_decode = kind != PatchType::Apply && opts.validation != FieldValidation::Ignore;
    let parsed = strict_decode
        .then(|| parse_patch(&body, kind == PatchType::Json))
        .flatten();
    let (patch_doc, patch_strict) = match parsed {
        Some(parsed) => parsed,
        None => (patch_json(&body, kind, opts.validation)?, Vec::new()),
    };
    if kind == PatchType::Json
        && patch_doc
            .as_array()
            .is_some_and(|ops| ops.len() > MAX_JSON_PATCH_OPS)
    {
        return Err(KubeError::TooLarge(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {}",
            patch_doc.as_array().map_or(0, Vec::len)
        )));
    }
    // A server-side apply's repeated keys: reported once the apply has merged, as
    // kube-apiserver's strict decode of its YAML reports them.
    let repeated = match kind {
        PatchType::Apply if opts.validation != FieldValidation::Ignore => {
            yaml_keys::repeated_keys(&req.body)
        }
        _ => Vec::new(),
    };
    let mut warnings = Vec::new();
    let mut apply_to = |live: &Secret| -> Result<Secret, KubeError> {
        let (mut next, w) = match kind {
            PatchType::Apply => (
                apply::server_side_apply(Some(live), &patch_doc, &opts.manager, force, &now())?,
                repeated_keys_checked(&repeated, opts.validation)?,
            ),
            _ => patched(live, kind, &patch_doc, &patch_strict, &opts)?,
        };
        check_path(&mut next, id.namespace.as_str(), Some(&id.name))?;
        warnings = w;
        Ok(next)
    };
    let recorded_as = |e: &KubeError| {
        let s = Status::of(e);
        (s.audit(), s.audit_object())
    };
    let request = || Some(AuditObject::patch(patch_doc.clone()));
    // A server-side apply creates an absent Secret (with the warnings of its first decode).
    let mut create_warnings = Vec::new();
    let create = (kind == PatchType::Apply).then_some(|| -> Result<Secret, KubeError> {
        let mut s = apply::server_side_apply(None, &patch_doc, &opts.manager, force, &now())?;
        create_warnings = repeated_keys_checked(&repeated, opts.validation)?;
        check_path(&mut s, id.namespace.as_str(), Some(&id.name))?;
        Ok(s)
    });
    let (s, created) = access
        .patch(
            &req.ctx,
            &id.namespace,
            &id.name,
            opts.dry_run,
            request,
            &mut apply_to,
            create,
            recorded_as,
        )
        .await?;
    if created {
        warnings = create_warnings;
    }
    Ok(Reply::Json {
        code: if created { 201 } else { 200 },
        body: encode_secret(&s),
        warnings,
    })
}

/// A JSON, merge or strategic merge patch applied to `live`, with the warnings of a
/// `fieldValidation=Warn` request (a `Strict` one fails on them instead).
fn patched(
    live: &Secret,
    kind: PatchType,
    patch_doc: &Value,
    patch_strict: &[String],
    opts: &WriteOptions,
) -> Result<(Secret, Vec<String>), KubeError> {
    let live_json = encode_secret(live);
    let strict_patch = opts.validation != FieldValidation::Ignore;
    let mut patched = match kind {
        PatchType::Json => patch::json_patch(&live_json, patch_doc, strict_patch)?,
        PatchType::Merge => patch::merge(&live_json, patch_doc, strict_patch)?,
        _ => patch::strategic_merge(&live_json, patch_doc)?,
    };
    // Upstream's patch libraries hold the result in Go maps, whose JSON has its keys sorted:
    // the order its strict decoding then reports unknown fields in.
    crate::manifest::gojson::sort_keys(&mut patched);
    let bytes = serde_json::to_vec(&patched).map_err(|e| KubeError::BadRequest(e.to_string()))?;
    // The patched object's unknown fields are reported after the patch's own strict errors,
    // and only once it decodes.
    let checked = match opts.validation {
        FieldValidation::Ignore => FieldValidation::Ignore,
        _ => FieldValidation::Warn,
    };
    let decoded = decode_secret(&bytes, checked).map_err(|e| match e {
        KubeError::Undecodable(detail) => patched_undecodable(kind, &detail),
        e => e,
    })?;
    let mut strict = patch_strict.to_vec();
    strict.extend(decoded.warnings);
    let warnings = match opts.validation {
        FieldValidation::Strict if !strict.is_empty() => {
            let why = format!("strict decoding error: {}", strict.join(", "));
            return Err(patched_undecodable(kind, &why));
        }
        FieldValidation::Warn => strict,
        _ => Vec::new(),
    };
    let mut s = decoded.secret;
    apply::record_update(Some(live), &mut s, &opts.manager, &now());
    Ok((s, warnings))
}

/// `DeleteOptions` from the body and the query.
struct DeleteOptions {
    dry_run: bool,
    pre: Preconditions,
    /// The body, as the audit log records it (kube-apiserver logs the decoded DeleteOptions
    /// as the request object, only when a body was sent).
    audited: Option<AuditObject>,
}

fn delete_options(req: &KubeRequest) -> Result<DeleteOptions, KubeError> {
    let body = req.json_value("DeleteOptions")?;
    let str_at = |path: &[&str]| {
        let mut v = &body;
        for p in path {
            v = v.get(*p)?;
        }
        v.as_str().map(str::to_owned)
    };
    let mut causes = Vec::new();
    let policy = str_at(&["propagationPolicy"])
        .or_else(|| req.param("propagationPolicy").map(str::to_owned));
    let orphan = body.get("orphanDependents").is_some_and(|v| !v.is_null())
        || req.param("orphanDependents").is_some();
    if let Some(p) = policy.as_ref().filter(|_| orphan) {
        causes.push(FieldError::new(
            "propagationPolicy",
            format!(
                "Invalid value: {}: orphanDependents and deletionPropagation cannot be both set",
                crate::authz::go_quote(p)
            ),
        ));
    }
    if let Some(p) =
        policy.filter(|p| !matches!(p.as_str(), "Orphan" | "Background" | "Foreground"))
    {
        causes.push(FieldError::new(
            "propagationPolicy",
            format!(
                "Unsupported value: {}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"",
                crate::authz::go_quote(&p)
            ),
        ));
    }
    let dry_run_values: Vec<String> = match body.get("dryRun").and_then(Value::as_array) {
        Some(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        None => req.param("dryRun").map(str::to_owned).into_iter().collect(),
    };
    for v in dry_run_values.iter().filter(|v| v.as_str() != "All") {
        causes.push(FieldError::new(
            "dryRun",
            format!(
                "Unsupported value: {}: supported values: \"All\"",
                crate::authz::go_quote(v)
            ),
        ));
    }
    if !causes.is_empty() {
        return Err(KubeError::Invalid {
            kind: "DeleteOptions.meta.k8s.io".into(),
            name: String::new(),
            causes,
        });
    }
    let resource_version = match str_at(&["preconditions", "resourceVersion"]) {
        None => None,
        Some(rv) => ResourceVersion::parse("preconditions.resourceVersion", &rv)
            .and_then(|rv| rv.exact("preconditions.resourceVersion"))
            .map_err(|e| KubeError::BadRequest(e.to_string()))?,
    };
    let uid = str_at(&["preconditions", "uid"]).filter(|u| !u.is_empty());
    // Re-encoded as kube-apiserver logs the options it decoded: `kind`, then `apiVersion` (the
    // body's, else `meta.k8s.io/v1`), then the fields it knows in its struct's order.
    let audited = match body {
        Value::Object(mut m) => {
            let mut out = serde_json::Map::new();
            out.insert("kind".into(), "DeleteOptions".into());
            let version = match m.remove("apiVersion") {
                Some(Value::String(v)) if !v.is_empty() => v,
                _ => "meta.k8s.io/v1".to_owned(),
            };
            out.insert("apiVersion".into(), version.into());
            for field in [
                "gracePeriodSeconds",
                "preconditions",
                "orphanDependents",
                "propagationPolicy",
                "dryRun",
                "ignoreStoreReadErrorWithClusterBreakingPotential",
            ] {
                if let Some(v) = m.remove(field).filter(|v| !v.is_null()) {
                    out.insert(field.into(), v);
                }
            }
            Some(AuditObject::json(Value::Object(out)))
        }
        _ => None,
    };
    Ok(DeleteOptions {
        audited,
        dry_run: !dry_run_values.is_empty(),
        pre: Preconditions {
            uid,
            resource_version,
            unsafe_ignore_decrypt_errors: false,
        },
    })
}

/// What a read of `id` that met a value no configured key opens answers: kube-apiserver's
/// corrupt-object error naming its storage key (a KMS plugin that cannot answer now stays a
/// 503); any other error as it is.
fn unreadable_named<'a>(
    access: &'a Access,
    id: &'a SecretId,
) -> impl Fn(AccessError) -> KubeError + 'a {
    move |e| {
        let why = match &e {
            AccessError::Store(StoreError::Encryption(inner))
                if !matches!(inner, EncryptionError::Kms { .. }) =>
            {
                inner.to_string()
            }
            AccessError::Store(StoreError::Undecryptable { reason, .. }) => reason.clone(),
            _ => return e.into(),
        };
        KubeError::Untransformable {
            key: access.storage_key(&id.namespace, &id.name),
            why,
        }
    }
}

/// `DELETE .../secrets/{name}`: a Success Status naming the deleted Secret.
pub async fn delete(access: &Access, req: &KubeRequest, id: &SecretId) -> Result<Reply, KubeError> {
    let opts = delete_options(req)?;
    let gone = access
        .delete(
            &req.ctx,
            &id.namespace,
            &id.name,
            &opts.pre,
            opts.dry_run,
            opts.audited,
        )
        .await
        .map_err(unreadable_named(access, id))?;
    if only_marked(&gone) {
        return Ok(Reply::Json {
            code: 200,
            body: encode_secret(&gone),
            warnings: Vec::new(),
        });
    }
    Ok(Reply::Status(Status::deleted(
        id.name.as_str(),
        &gone.metadata.uid,
    )))
}

/// Whether a delete only marked the Secret: its finalizers remain, and kube-apiserver answers
/// with the object instead of a Success Status.
fn only_marked(gone: &Secret) -> bool {
    !gone.metadata.finalizers.is_empty() && !gone.metadata.deletion_timestamp.is_empty()
}

/// What a delete that removed (or marked) `gone` answers, as the audit log records it
/// ([`RequestContext::recording_deletions_as`](crate::access::RequestContext::recording_deletions_as)):
/// a `Success` Status, or the Secret when it was only marked (it has finalizers).
pub const DELETION_ANSWER: DeletionAnswer = DeletionAnswer {
    status: |gone| {
        (!only_marked(gone))
            .then(|| Status::deleted(gone.metadata.name.as_str(), &gone.metadata.uid).audit())
    },
    body: |gone| match only_marked(gone) {
        true => Some(AuditObject::secret(gone)),
        false => Status::deleted(gone.metadata.name.as_str(), &gone.metadata.uid).audit_object(),
    },
};

/// `DELETE .../secrets`: deletes every Secret the selectors match, each with the request's
/// preconditions (authorized once, as `deletecollection`); answers the list deleted.
pub async fn delete_collection(
    access: &Access,
    req: &KubeRequest,
    ns: &Scope,
) -> Result<Reply, KubeError> {
    let opts = delete_options(req)?;
    let (labels, fields) = selectors(req)?;
    let deleted = access
        .delete_collection(
            &req.ctx,
            ns,
            &labels,
            |s| fields.matches(s),
            &opts.pre,
            opts.dry_run,
            opts.audited,
        )
        .await?;
    Ok(Reply::ok(secret_list(
        &deleted.items,
        &deleted.resource_version.to_string(),
        None,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::SecretBytes;

    /// Field names of `v`'s object, in the order they are written.
    fn keys(v: &Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn list_items_keep_kube_apiservers_field_order() {
        let mut s = Secret::default();
        s.metadata.name = "a".into();
        s.metadata.namespace = "default".into();
        s.metadata.labels.insert("app".into(), "web".into());
        s.immutable = Some(true);
        s.data.insert("k".into(), SecretBytes::new(b"v".to_vec()));
        s.type_ = "Opaque".into();
        let list = secret_list(&[s], "7", None);
        assert_eq!(keys(&list), ["kind", "apiVersion", "metadata", "items"]);
        let item = &list["items"][0];
        assert_eq!(keys(item), ["metadata", "immutable", "data", "type"]);
        assert_eq!(keys(&item["metadata"]), ["name", "namespace", "labels"]);
    }
}
