//! `keyward create secret generic|docker-registry|tls`: the Secret built from the flags as
//! kubectl builds it, created on the server, or printed as kubectl's client dry run prints it.

use super::super::client::{self, ClientArgs};
use super::super::sources::{
    add_from_file, add_key, bytes, check_tls_pair, data_key, docker_config_json, env_file,
    new_secret, read_file,
};
use super::super::CliError;
use super::{rt, CreateCommand, CreateSecret, DryRun, ObjectOutput};
use crate::api::{secret_from_pb, secret_to_pb};
use crate::manifest;
use crate::pb::keyward_v1 as pb;
use crate::store::model::SecretBytes;
use crate::store::Secret;
use std::path::Path;

/// `keyward create secret ...`.
pub(in crate::cli) fn create(cmd: CreateCommand, client: &ClientArgs) -> Result<(), CliError> {
    let cmd = match cmd {
        CreateCommand::Secret(cmd) => cmd,
        CreateCommand::Token(a) => return super::super::auth::create_token(a, client),
    };
    let named = match &cmd {
        CreateSecret::Generic { name, .. }
        | CreateSecret::DockerRegistry { name, .. }
        | CreateSecret::Tls { name, .. } => !name.is_empty(),
    };
    if !named {
        return Err(CliError::plain("error: name must be specified"));
    }
    // (Secret, flags, whether the type was given: kubectl's dry run prints it only then.)
    let (s, common, typed) = match cmd {
        CreateSecret::Generic {
            name,
            from_literal,
            from_file,
            from_env_file,
            type_,
            common,
        } => {
            // kubectl's check, before any file is read.
            if !from_env_file.is_empty() && (!from_file.is_empty() || !from_literal.is_empty()) {
                return Err(CliError::plain(
                    "error: from-env-file cannot be combined with from-file or from-literal",
                ));
            }
            let mut s = new_secret(
                &name,
                &common.ns.namespace,
                type_.as_deref().unwrap_or(""),
                common.immutable,
            );
            for lit in &from_literal {
                let (k, v) = lit.split_once('=').ok_or_else(|| {
                    CliError::plain(format!("error: --from-literal: {lit:?} is not KEY=VALUE"))
                })?;
                add_key(
                    &mut s.data,
                    data_key(k, "--from-literal")?,
                    bytes(v.as_bytes()),
                )?;
            }
            for f in &from_file {
                add_from_file(f, &mut s.data)?;
            }
            for f in &from_env_file {
                env_file(Path::new(f), &mut s.data)?;
            }
            let typed = type_.as_deref().is_some_and(|t| !t.is_empty());
            (s, common, typed)
        }
        CreateSecret::DockerRegistry {
            name,
            docker_server,
            docker_username,
            docker_password,
            docker_email,
            common,
        } => {
            // kubectl's check (without its --from-file alternative).
            if [&docker_server, &docker_username, &docker_password]
                .iter()
                .any(|v| v.is_empty())
            {
                return Err(CliError::new(
                    "the combination of --docker-username, --docker-password and --docker-server is required (none may be empty)",
                ));
            }
            let mut s = new_secret(
                &name,
                &common.ns.namespace,
                "kubernetes.io/dockerconfigjson",
                common.immutable,
            );
            let cfg = docker_config_json(
                &docker_server,
                &docker_username,
                &docker_password,
                docker_email.as_deref(),
            );
            s.data.insert(".dockerconfigjson".into(), SecretBytes(cfg));
            (s, common, true)
        }
        CreateSecret::Tls {
            name,
            cert,
            key,
            common,
        } => {
            let c = read_file(&cert, "--cert")?;
            let k = read_file(&key, "--key")?;
            check_tls_pair(&c, &k, &cert, &key)?;
            let mut s = new_secret(
                &name,
                &common.ns.namespace,
                "kubernetes.io/tls",
                common.immutable,
            );
            s.data.insert("tls.crt".into(), SecretBytes(c));
            s.data.insert("tls.key".into(), SecretBytes(k));
            (s, common, true)
        }
    };
    if common.dry_run == DryRun::Client {
        let mut s = s;
        crate::store::model::normalize(&mut s);
        // As kubectl: without -o, only what would be done (never the values on a terminal).
        return match common.output {
            Some(o @ (ObjectOutput::Yaml | ObjectOutput::Json)) => {
                let v = client_dry_run(&s, typed, namespace_given());
                match o {
                    ObjectOutput::Yaml => print!("{}", manifest::goyaml::to_yaml(&v)),
                    _ => println!("{}", struct_order_json(&v)?),
                }
                Ok(())
            }
            other => print_object(&s, other, "created (dry run)"),
        };
    }
    let dry = common.dry_run == DryRun::Server;
    let made = rt()?.block_on(async {
        let mut c = client::connect(client).await?;
        c.create(pb::CreateRequest {
            secret: Some(secret_to_pb(s)),
            dry_run: dry,
        })
        .await
        .map_err(client::server_error)
    })?;
    let made = secret_from_pb(made.into_inner());
    print_object(
        &made,
        common.output,
        if dry {
            "created (server dry run)"
        } else {
            "created"
        },
    )
}

/// The object `kubectl create secret --dry-run=client -o yaml|json` prints: what the client
/// built and never sent, so `creationTimestamp: null`, the namespace only when one was given
/// (`-n`), the type only when given (`--type`; tls and docker-registry always have theirs).
fn client_dry_run(s: &Secret, typed: bool, namespaced: bool) -> serde_json::Value {
    let mut v = manifest::object_value(s);
    if let Some(o) = v.as_object_mut() {
        if !typed {
            o.shift_remove("type");
        }
        if let Some(m) = o
            .get_mut("metadata")
            .and_then(serde_json::Value::as_object_mut)
        {
            m.insert("creationTimestamp".into(), serde_json::Value::Null);
            if !namespaced {
                m.shift_remove("namespace");
            }
        }
    }
    v
}

/// `v` (a Secret as [`client_dry_run`] makes it) as kubectl's JSON printer writes the typed
/// object it built: fields in `corev1.Secret`'s order (kind, apiVersion, metadata with name,
/// namespace, then creationTimestamp, …), indented by four spaces, HTML-safe.
fn struct_order_json(v: &serde_json::Value) -> Result<String, CliError> {
    use serde::Serialize;
    use serde_json::Value;
    let mut ordered = serde_json::Map::new();
    let field = |m: &serde_json::Map<String, Value>, k: &str| m.get(k).cloned();
    let top = v.as_object().cloned().unwrap_or_default();
    ordered.insert("kind".into(), "Secret".into());
    ordered.insert("apiVersion".into(), "v1".into());
    let meta = top
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut m = serde_json::Map::new();
    for k in ["name", "generateName", "namespace", "creationTimestamp"] {
        if let Some(x) = field(&meta, k) {
            m.insert(k.into(), x);
        }
    }
    for (k, x) in meta {
        if !m.contains_key(&k) {
            m.insert(k, x);
        }
    }
    ordered.insert("metadata".into(), Value::Object(m));
    for k in ["immutable", "data", "type"] {
        if let Some(x) = field(&top, k) {
            ordered.insert(k.into(), x);
        }
    }
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    Value::Object(ordered)
        .serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
        .map_err(|e| CliError::new(format!("cannot print the Secret as JSON: {e}")))?;
    // Go's encoder escapes these (they occur only inside strings).
    Ok(String::from_utf8_lossy(&out)
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029"))
}

/// Whether the command line names a namespace (`-n NS`, `-nNS`, `--namespace[=]NS`).
fn namespace_given() -> bool {
    std::env::args().skip(1).any(|a| {
        a == "--namespace"
            || a.starts_with("--namespace=")
            || (a.starts_with("-n") && !a.starts_with("--"))
    })
}

fn print_object(s: &Secret, output: Option<ObjectOutput>, verb: &str) -> Result<(), CliError> {
    match output {
        None => println!("secret/{} {verb}", s.metadata.name),
        Some(ObjectOutput::Name) => println!("secret/{}", s.metadata.name),
        Some(ObjectOutput::Yaml) => print!("{}", manifest::to_yaml(s)),
        Some(ObjectOutput::Json) => println!("{}", manifest::secret_json(s)),
    }
    Ok(())
}
