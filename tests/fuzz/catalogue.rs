//! The bad-input catalogue: malformed inputs across the interfaces people and programs use —
//! the store's `keyward.v1.Secrets` API and the KMS v2/v1 APIs over the real Unix sockets of a
//! `keyward dev` child, the `keyward` binary's flags, manifests and kustomizations through
//! `keyward apply`, and the configuration files (EncryptionConfiguration, token files, the Unix
//! users file, RBAC and audit policies) through their loaders.
//!
//! Each case must fail with a message that names the field (the listed texts must all appear),
//! and change nothing: the store's revision and objects, the keyring's keys, the files the
//! case gave, and the paths it must not create are compared before and after. One table row
//! per case: see [`cases`].

use std::collections::BTreeMap;
use std::path::Path;

use keyward::audit;
use keyward::authn::tokenfile::{StaticTokens, TokenFileFormat};
use keyward::authn::unix::UnixAuthenticator;
use keyward::encryption::{config, ParseOptions};
use keyward::pb::keyward_v1 as pb;
use keyward::pb::keyward_v1::kms_admin_client::KmsAdminClient;
use keyward::pb::keyward_v1::secrets_client::SecretsClient;
use keyward::pb::kms_v1beta1 as v1;
use keyward::pb::kms_v1beta1::key_management_service_client::KeyManagementServiceClient as V1Client;
use keyward::pb::kms_v2 as v2;
use keyward::pb::kms_v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use keyward::uds;
use tonic::transport::Channel;
use tonic::Code;

use crate::support::store::{pb_secret, write_private};
use crate::support::{client_runtime, DevServer};

/// A KMS ciphertext in a request: given bytes, or one the plugin just made, changed.
#[derive(Clone, Copy)]
enum Ct {
    Bytes(&'static [u8]),
    Made,
    Flipped(usize),
    Truncated(usize),
    Extended,
}

/// A store or KMS request, a command line, or a file to load.
enum Call {
    Create(pb::Secret),
    Update(pb::Secret),
    Get(&'static str, &'static str, i64),
    Delete(&'static str, &'static str, &'static str, &'static str),
    List(&'static str, &'static str, i64, &'static str),
    Watch(&'static str, &'static str, &'static str),
    /// A list of every namespace with this field selector.
    ListFields(&'static str),
    /// A watch of every namespace with this field selector.
    WatchFields(&'static str),
    History(&'static str, &'static str),
    Rollback(&'static str, &'static str, i64),
    V2Encrypt(usize),
    V2Decrypt(Ct, &'static str),
    V1Version(&'static str),
    V1Encrypt(&'static str, usize),
    V1Decrypt(&'static str, Ct),
    /// `keyward ARGS --server DEV` (`{dir}` in an argument is the case's temp dir).
    Cli(&'static [&'static str]),
    /// `keyward apply -f FILE` with FILE holding the text.
    ApplyFile(&'static str),
    /// `keyward apply -k DIR` with DIR holding (name, text) files.
    ApplyKustomize(&'static [(&'static str, &'static str)]),
    EncryptionConfig(&'static str),
    TokenCsv(&'static str),
    TokenLines(&'static str),
    UnixUsers(&'static str),
    Rbac(&'static str),
    AuditPolicy(&'static str),
}

/// One row: what is wrong, the call, the gRPC code (store and KMS calls), and texts the error
/// must contain.
struct Case {
    what: &'static str,
    call: Call,
    code: Option<Code>,
    want: &'static [&'static str],
}

fn case(what: &'static str, call: Call, code: Option<Code>, want: &'static [&'static str]) -> Case {
    Case {
        what,
        call,
        code,
        want,
    }
}

const INVALID: Option<Code> = Some(Code::InvalidArgument);

/// A Secret `ns/name` with `data` (key, value) pairs and `type`.
fn sec(ns: &str, name: &str, ty: &str, data: &[(&str, &[u8])]) -> pb::Secret {
    let mut s = pb_secret(ns, name, data);
    s.r#type = ty.into();
    s
}

/// [`sec`] with one label, annotation or resourceVersion set through `f`.
fn meta(ns: &str, name: &str, f: impl FnOnce(&mut pb::ObjectMeta)) -> pb::Secret {
    let mut s = sec(ns, name, "", &[("k", b"v")]);
    f(s.metadata.as_mut().expect("metadata"));
    s
}

fn label(k: &str, v: &str) -> pb::Secret {
    meta("default", "l", |m| {
        m.labels.insert(k.into(), v.into());
    })
}

fn annotation(k: &str, v: &str) -> pb::Secret {
    meta("default", "a", |m| {
        m.annotations.insert(k.into(), v.into());
    })
}

fn with_rv(name: &str, rv: &str) -> pb::Secret {
    meta("default", name, |m| m.resource_version = rv.into())
}

fn string_data(k: &str) -> pb::Secret {
    let mut s = sec("default", "sd", "", &[]);
    s.string_data.insert(k.into(), "v".into());
    s
}

/// The existing immutable Secret `frozen` changed by `f`.
fn frozen(f: impl FnOnce(&mut pb::Secret)) -> pb::Secret {
    let mut s = sec("default", "frozen", "", &[("k", b"v")]);
    s.immutable = Some(true);
    f(&mut s);
    s
}

const BIG: &[u8] = &[b'x'; 700 * 1024];
const NAME_254: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const NS_64: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const VALUE_64: &str = "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv";

/// A valid EncryptionConfiguration's head: the providers follow.
macro_rules! enc {
    ($providers:expr) => {
        concat!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n",
            $providers
        )
    };
}

macro_rules! rbac {
    ($body:expr) => {
        concat!("apiVersion: rbac.authorization.k8s.io/v1\n", $body)
    };
}

macro_rules! audit_policy {
    ($rules:expr) => {
        concat!(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n",
            $rules
        )
    };
}

macro_rules! secret_doc {
    ($body:expr) => {
        concat!("apiVersion: v1\nkind: Secret\n", $body)
    };
}

/// The catalogue. Adding a case is adding a row.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Call::*;
    vec![
        // ---- keyward.v1.Secrets over the store's Unix socket ----
        case("empty name", Create(sec("default", "", "", &[])), INVALID, &["metadata.name", "Required value"]),
        case("name with capitals", Create(sec("default", "Bad_Name", "", &[])), INVALID, &["metadata.name", "Bad_Name"]),
        case("name of 254 characters", Create(sec("default", NAME_254, "", &[])), INVALID, &["metadata.name"]),
        case("name with a slash", Create(sec("default", "a/b", "", &[])), INVALID, &["metadata.name"]),
        case("name `..`", Create(sec("default", "..", "", &[])), INVALID, &["metadata.name"]),
        case("namespace with capitals", Create(sec("Bad_NS", "x", "", &[])), INVALID, &["metadata.namespace", "Bad_NS"]),
        case("namespace of 64 characters", Create(sec(NS_64, "x", "", &[])), INVALID, &["metadata.namespace"]),
        case("namespace with a dot", Create(sec("a.b", "x", "", &[])), INVALID, &["metadata.namespace"]),
        case("data key with a space", Create(sec("default", "x", "", &[("bad key", b"v")])), INVALID, &["data[bad key]"]),
        case("empty data key", Create(sec("default", "x", "", &[("", b"v")])), INVALID, &["data[]"]),
        case("data key `..`", Create(sec("default", "x", "", &[("..", b"v")])), INVALID, &["data[..]"]),
        case("data key with a slash", Create(sec("default", "x", "", &[("a/b", b"v")])), INVALID, &["data[a/b]"]),
        case("data over 1 MiB", Create(sec("default", "x", "", &[("a", BIG), ("b", BIG)])), INVALID, &["data", "Too long"]),
        case("stringData key with a space", Create(string_data("bad key")), INVALID, &["bad key"]),
        case("tls without tls.key", Create(sec("default", "x", "kubernetes.io/tls", &[("tls.crt", b"c")])), INVALID, &["data[tls.key]", "Required value"]),
        case("tls without anything", Create(sec("default", "x", "kubernetes.io/tls", &[])), INVALID, &["data[tls.crt]", "data[tls.key]"]),
        case("dockerconfigjson not JSON", Create(sec("default", "x", "kubernetes.io/dockerconfigjson", &[(".dockerconfigjson", b"{")])), INVALID, &["data[.dockerconfigjson]", "JSON"]),
        case("dockerconfigjson missing", Create(sec("default", "x", "kubernetes.io/dockerconfigjson", &[])), INVALID, &["data[.dockerconfigjson]"]),
        case("dockercfg missing", Create(sec("default", "x", "kubernetes.io/dockercfg", &[])), INVALID, &["data[.dockercfg]"]),
        case("basic-auth without user or password", Create(sec("default", "x", "kubernetes.io/basic-auth", &[])), INVALID, &["data[username]"]),
        case("ssh-auth without a key", Create(sec("default", "x", "kubernetes.io/ssh-auth", &[])), INVALID, &["data[ssh-privatekey]"]),
        case("service-account-token without its annotation", Create(sec("default", "x", "kubernetes.io/service-account-token", &[])), INVALID, &["metadata.annotations[kubernetes.io/service-account.name]"]),
        case("label key with a space", Create(label("bad key", "v")), INVALID, &["metadata.labels"]),
        case("label value of 64 characters", Create(label("app", VALUE_64)), INVALID, &["metadata.labels"]),
        case("label value with a slash", Create(label("app", "a/b")), INVALID, &["metadata.labels"]),
        case("annotation key starting with a slash", Create(annotation("/x", "v")), INVALID, &["metadata.annotations"]),
        case("annotation key with two slashes", Create(annotation("a/b/c", "v")), INVALID, &["metadata.annotations"]),
        case("resourceVersion on create", Create(with_rv("new", "5")), INVALID, &["metadata.resourceVersion"]),
        case("create of an existing Secret", Create(sec("default", "keep", "", &[("k", b"other")])), Some(Code::AlreadyExists), &["keep", "already exists"]),
        case("update with resourceVersion `abc`", Update(with_rv("keep", "abc")), INVALID, &["metadata.resourceVersion", "abc"]),
        case("update with resourceVersion `-1`", Update(with_rv("keep", "-1")), INVALID, &["metadata.resourceVersion"]),
        case("update with resourceVersion `0`", Update(with_rv("keep", "0")), INVALID, &["metadata.resourceVersion"]),
        case("update with a stale resourceVersion", Update(with_rv("keep", "1")), Some(Code::Aborted), &["keep"]),
        case("update of a missing Secret", Update(sec("default", "absent", "", &[("k", b"v")])), Some(Code::NotFound), &["absent", "not found"]),
        case("update of an immutable Secret's data", Update(frozen(|s| { s.data.insert("k".into(), b"changed".to_vec()); })), INVALID, &["data", "immutable"]),
        case("update unsetting immutable", Update(frozen(|s| s.immutable = Some(false))), INVALID, &["immutable"]),
        case("update changing the type", Update(sec("default", "keep", "example.com/other", &[("k", b"v")])), INVALID, &["type", "immutable"]),
        case("update with an invalid name", Update(sec("default", "Bad", "", &[("k", b"v")])), INVALID, &["metadata.name"]),
        case("get with an invalid name", Get("default", "Bad_Name", 0), INVALID, &["metadata.name"]),
        case("get with an invalid namespace", Get("Bad_NS", "keep", 0), INVALID, &["metadata.namespace"]),
        case("get at revision -1", Get("default", "keep", -1), INVALID, &["revision"]),
        case("get at a future revision", Get("default", "keep", 1 << 40), INVALID, &["revision"]),
        case("delete with resourceVersion `x`", Delete("default", "keep", "", "x"), INVALID, &["resourceVersion"]),
        case("delete with resourceVersion `0`", Delete("default", "keep", "", "0"), INVALID, &["resourceVersion"]),
        case("delete with another uid", Delete("default", "keep", "00000000-0000-0000-0000-000000000000", ""), Some(Code::Aborted), &["the UID in the precondition (00000000-0000-0000-0000-000000000000) does not match"]),
        case("delete with a stale resourceVersion", Delete("default", "keep", "", "1"), Some(Code::Aborted), &["keep"]),
        case("delete of a missing Secret", Delete("default", "absent", "", ""), Some(Code::NotFound), &["absent"]),
        case("delete with an invalid name", Delete("default", "Bad", "", ""), INVALID, &["metadata.name"]),
        case("list with an unbalanced selector", List("", "a in (", 0, ""), INVALID, &["label_selector", "expected: ',', ')' or identifier"]),
        case("list with a selector key `!`", List("", "!", 0, ""), INVALID, &["label_selector"]),
        case("list with a selector value with a space", List("", "a=b c", 0, ""), INVALID, &["label_selector"]),
        case("list with a bad set value", List("", "a in (b/c)", 0, ""), INVALID, &["label_selector"]),
        case("list with limit -1", List("", "", -1, ""), INVALID, &["limit"]),
        case("list with a garbage continue token", List("", "", 1, "garbage"), INVALID, &["continue"]),
        case("list with a continue token of another namespace", List("other", "", 1, "eyJydiI6MSwic3RhcnQiOiIvcmVnaXN0cnkvc2VjcmV0cy9kZWZhdWx0LyJ9"), INVALID, &["continue"]),
        case("list with JSON that is not a token", List("", "", 1, "e30"), INVALID, &["continue"]),
        case("list with an invalid namespace", List("Bad_NS", "", 0, ""), INVALID, &["namespace: Invalid value: \"Bad_NS\""]),
        case("watch from resourceVersion `abc`", Watch("", "abc", ""), INVALID, &["resource_version: Invalid value: \"abc\""]),
        case("watch from resourceVersion `-5`", Watch("", "-5", ""), INVALID, &["resource_version: Invalid value: \"-5\""]),
        case("watch from a resourceVersion beyond i64", Watch("", "99999999999999999999", ""), INVALID, &["resource_version"]),
        case("watch with a bad selector", Watch("", "", "a in ("), INVALID, &["label_selector"]),
        case("watch of an invalid namespace", Watch("Bad_NS", "", ""), INVALID, &["namespace: Invalid value: \"Bad_NS\""]),
        case("list with a field selector on another field", ListFields("spec.x=1"), INVALID, &["field_selector", "field label not supported: spec.x"]),
        case("list with a field selector term without an operator", ListFields("metadata.name"), INVALID, &["field_selector", "can't understand"]),
        case("watch with a field selector on another field", WatchFields("data.k=v"), INVALID, &["field_selector", "data.k"]),
        case("history of an invalid name", History("default", "Bad"), INVALID, &["metadata.name"]),
        case("history of an invalid namespace", History("Bad_NS", "keep"), INVALID, &["metadata.namespace"]),
        case("rollback to revision 0", Rollback("default", "keep", 0), INVALID, &["revision"]),
        case("rollback to revision -3", Rollback("default", "keep", -3), INVALID, &["revision"]),
        case("rollback to a revision the Secret never had", Rollback("default", "keep", 1 << 40), None, &["revision"]),
        case("rollback of an invalid name", Rollback("default", "Bad", 1), INVALID, &["metadata.name"]),
        // ---- KMS v2 and v1 over the plugin's Unix socket ----
        case("v2 Encrypt of nothing", V2Encrypt(0), INVALID, &["plaintext"]),
        case("v2 Encrypt over 64 KiB", V2Encrypt(64 * 1024 + 1), INVALID, &["plaintext"]),
        case("v2 Decrypt of nothing", V2Decrypt(Ct::Bytes(b""), ""), INVALID, &["decrypt"]),
        case("v2 Decrypt of garbage", V2Decrypt(Ct::Bytes(b"garbage"), ""), INVALID, &["decryption failed"]),
        case("v2 Decrypt of a flipped header byte", V2Decrypt(Ct::Flipped(0), "{key_id}"), INVALID, &["decryption failed"]),
        case("v2 Decrypt of a flipped key id byte", V2Decrypt(Ct::Flipped(5), "{key_id}"), None, &[]),
        case("v2 Decrypt of a flipped tag byte", V2Decrypt(Ct::Flipped(usize::MAX), "{key_id}"), INVALID, &["decryption failed"]),
        case("v2 Decrypt of a truncated ciphertext", V2Decrypt(Ct::Truncated(20), "{key_id}"), INVALID, &["decryption failed"]),
        case("v2 Decrypt of an extended ciphertext", V2Decrypt(Ct::Extended, "{key_id}"), INVALID, &["decryption failed"]),
        case("v2 Decrypt with an unknown key_id", V2Decrypt(Ct::Made, "kw-99-00000000000000000000000000000000"), INVALID, &["decryption failed"]),
        case("v2 Decrypt with a malformed key_id", V2Decrypt(Ct::Made, "not a key id"), INVALID, &["decryption failed"]),
        case("v1 Version of another version", V1Version("v2"), INVALID, &["version", "v1beta1"]),
        case("v1 Encrypt of another version", V1Encrypt("v9", 32), INVALID, &["version", "v9"]),
        case("v1 Encrypt of nothing", V1Encrypt("v1beta1", 0), INVALID, &["plaintext"]),
        case("v1 Encrypt over 64 KiB", V1Encrypt("v1beta1", 64 * 1024 + 1), INVALID, &["plaintext"]),
        case("v1 Decrypt of garbage", V1Decrypt("v1beta1", Ct::Bytes(b"\x01\x01garbage")), INVALID, &["decryption failed"]),
        case("v1 Decrypt of another version", V1Decrypt("v2", Ct::Made), INVALID, &["version"]),
        case("v1 Decrypt of a flipped ciphertext", V1Decrypt("", Ct::Flipped(usize::MAX)), INVALID, &["decryption failed"]),
        // ---- the keyward binary's flags ----
        case("create: invalid Secret name", Cli(&["create", "secret", "generic", "Bad_Name", "--from-literal", "a=b"]), None, &["metadata.name", "Bad_Name"]),
        case("create: --from-literal without =", Cli(&["create", "secret", "generic", "x", "--from-literal", "novalue"]), None, &["--from-literal", "KEY=VALUE"]),
        case("create: --from-literal with an empty key", Cli(&["create", "secret", "generic", "x", "--from-literal", "=v"]), None, &["--from-literal", "data[]"]),
        case("create: --from-literal with a bad key", Cli(&["create", "secret", "generic", "x", "--from-literal", "bad key=v"]), None, &["--from-literal", "data[bad key]"]),
        case("create: --from-file that does not exist", Cli(&["create", "secret", "generic", "x", "--from-file", "{dir}/absent"]), None, &["--from-file", "absent"]),
        case("create: --from-env-file that does not exist", Cli(&["create", "secret", "generic", "x", "--from-env-file", "{dir}/absent"]), None, &["--from-env-file", "absent"]),
        case("create: tls --cert that does not exist", Cli(&["create", "secret", "tls", "t", "--cert", "{dir}/absent", "--key", "{dir}/absent"]), None, &["--cert", "absent"]),
        case("create: docker-registry without credentials", Cli(&["create", "secret", "docker-registry", "d"]), None, &["--docker-username", "--docker-password"]),
        case("create: tls type without its keys", Cli(&["create", "secret", "generic", "t2", "--type", "kubernetes.io/tls", "--from-literal", "a=b"]), None, &["data[tls.crt]", "data[tls.key]"]),
        // kubectl's words, which name the flag's value as the output format.
        case("get: unknown output format", Cli(&["get", "secrets", "-o", "bogus"]), None, &["output format \"bogus\"", "allowed formats are"]),
        case("get: unbalanced selector", Cli(&["get", "secrets", "-l", "a in ("]), None, &["label selector \"a in (\"", "expected: ',', ')' or identifier"]),
        case("get: invalid namespace", Cli(&["get", "secrets", "-n", "BAD_NS"]), None, &["--namespace", "metadata.namespace"]),
        case("get: invalid Secret name", Cli(&["get", "secret", "Bad_Name"]), None, &["metadata.name"]),
        case("get: invalid --key", Cli(&["get", "secret", "keep", "--key", "bad key"]), None, &["--key", "data[bad key]"]),
        case("delete: invalid name", Cli(&["delete", "secret", "BAD"]), None, &["metadata.name", "BAD"]),
        case("describe: invalid name", Cli(&["describe", "secret", "BAD"]), None, &["metadata.name"]),
        case("history: invalid name", Cli(&["history", "secret", "BAD"]), None, &["metadata.name"]),
        case("rollback: --to-revision abc", Cli(&["rollback", "secret", "keep", "--to-revision", "abc"]), None, &["--to-revision", "abc"]),
        case("rollback: --to-revision 0", Cli(&["rollback", "secret", "keep", "--to-revision", "0"]), None, &["--to-revision", "from 1 to 9223372036854775807"]),
        case("--server with another scheme", Cli(&["--server", "ftp://x", "get", "secrets"]), None, &["--server", "ftp://x"]),
        case("--server unix:// without a path", Cli(&["--server", "unix://", "get", "secrets"]), None, &["--server", "unix://"]),
        case("kms init: unknown seal", Cli(&["kms", "init", "--seal", "bogus:x", "--data", "{dir}/d1"]), None, &["seal", "bogus:x"]),
        case("kms init: keyfile without a path", Cli(&["kms", "init", "--seal", "keyfile:", "--data", "{dir}/d1"]), None, &["seal", "keyfile:"]),
        case("kms init: fewer shares than the threshold", Cli(&["kms", "init", "--seal", "shamir:shares=1,threshold=2", "--data", "{dir}/d1"]), None, &["shares", "threshold"]),
        case("kms init: key file that does not exist", Cli(&["kms", "init", "--seal", "keyfile:{dir}/absent.key", "--data", "{dir}/d1"]), None, &["absent.key"]),
        case("kms init: unknown algorithm", Cli(&["kms", "init", "--algorithm", "rot13", "--seal", "keyfile:{dir}/k", "--data", "{dir}/d1"]), None, &["--algorithm", "rot13"]),
        case("kms serve: --rotate-after 0s", Cli(&["kms", "serve", "--data", "{dir}/d1", "--seal", "keyfile:{dir}/k", "--socket", "{dir}/s", "--rotate-after", "0s"]), None, &["--rotate-after", "0s"]),
        case("kms serve: --drain-timeout abc", Cli(&["kms", "serve", "--data", "{dir}/d1", "--seal", "keyfile:{dir}/k", "--socket", "{dir}/s", "--drain-timeout", "abc"]), None, &["--drain-timeout", "abc"]),
        case("server: encryption config that does not exist", Cli(&["server", "--data", "{dir}/d2", "--encryption-config", "{dir}/absent.yaml", "--socket", "{dir}/s2"]), None, &["encryption configuration", "absent.yaml"]),
        case("bench kms: --concurrency 0", Cli(&["bench", "kms", "--endpoint", "unix:///nonexistent.sock", "--concurrency", "0"]), None, &["--concurrency", "got 0"]),
        case("bench kms: --duration 2d", Cli(&["bench", "kms", "--endpoint", "unix:///nonexistent.sock", "--duration", "2d"]), None, &["--duration", "24h"]),
        case("bench kms: --endpoint of another scheme", Cli(&["bench", "kms", "--endpoint", "ftp://x"]), None, &["--endpoint", "ftp://x"]),
        case("audit verify: a log that does not exist", Cli(&["audit", "verify", "{dir}/absent.log"]), None, &["audit log", "absent.log"]),
        case("completion: unknown shell", Cli(&["completion", "tcsh"]), None, &["<SHELL>", "tcsh"]),
        case("apply: a file that does not exist", Cli(&["apply", "-f", "{dir}/absent.yaml"]), None, &["absent.yaml", "does not exist"]),
        case("apply: -k of a missing directory", Cli(&["apply", "-k", "{dir}/absent"]), None, &["-k", "kustomization"]),
        // ---- manifests through keyward apply -f ----
        case("manifest: a ConfigMap", ApplyFile("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"), None, &["kind", "ConfigMap"]),
        case("manifest: apiVersion v2", ApplyFile("apiVersion: v2\nkind: Secret\nmetadata: {name: c}\n"), None, &["apiVersion", "must be \"v1\""]),
        case("manifest: no name", ApplyFile(secret_doc!("metadata: {namespace: default}\ndata: {k: dg==}\n")), None, &["metadata.name"]),
        case("manifest: data not base64", ApplyFile(secret_doc!("metadata: {name: m}\ndata: {k: '!!!'}\n")), None, &["data", "base64"]),
        case("manifest: a data value that is a map", ApplyFile(secret_doc!("metadata: {name: m}\ndata: {k: {a: b}}\n")), None, &["data[k]", "expected a string"]),
        case("manifest: stringData value that is a list", ApplyFile(secret_doc!("metadata: {name: m}\nstringData: {k: [a]}\n")), None, &["stringData[k]", "expected a string"]),
        case("manifest: immutable `yes please`", ApplyFile(secret_doc!("metadata: {name: m}\nimmutable: yes please\n")), None, &["immutable", "expected a boolean"]),
        case("manifest: invalid namespace", ApplyFile(secret_doc!("metadata: {name: m, namespace: Bad_NS}\n")), None, &["metadata.namespace"]),
        case("manifest: a bad data key", ApplyFile(secret_doc!("metadata: {name: m}\ndata: {'bad key': dg==}\n")), None, &["data[bad key]"]),
        case("manifest: an unknown field", ApplyFile(secret_doc!("metadata: {name: m}\nspec: {}\n")), None, &["spec"]),
        case("manifest: YAML syntax error", ApplyFile("apiVersion: v1\nkind: Secret\nmetadata: {name: [\n"), None, &["document 1"]),
        case("manifest: a list item that is not an object", ApplyFile("apiVersion: v1\nkind: List\nitems: [3]\n"), None, &["object"]),
        case("manifest: a valid document, then an invalid one", ApplyFile(concat!("apiVersion: v1\nkind: Secret\nmetadata: {name: first-ok}\n---\n", "apiVersion: v1\nkind: Secret\nmetadata: {name: Bad_Second}\n")), None, &["metadata.name", "Bad_Second"]),
        case("manifest: a type change of an existing Secret", ApplyFile(secret_doc!("metadata: {name: keep}\ntype: example.com/other\ndata: {k: dg==}\n")), None, &["type"]),
        case("manifest: a tls Secret without its keys", ApplyFile(secret_doc!("metadata: {name: t}\ntype: kubernetes.io/tls\n")), None, &["data[tls.crt]"]),
        case("kustomization: an unsupported field", ApplyKustomize(&[("kustomization.yaml", "patches: []\n")]), None, &["patches"]),
        case("kustomization: a literal without =", ApplyKustomize(&[("kustomization.yaml", "secretGenerator:\n  - name: g\n    literals: [novalue]\n")]), None, &["literals", "novalue"]),
        case("kustomization: a file outside the directory", ApplyKustomize(&[("kustomization.yaml", "secretGenerator:\n  - name: g\n    files: [../outside]\n")]), None, &["files", "../outside"]),
        case("kustomization: an env file that does not exist", ApplyKustomize(&[("kustomization.yaml", "secretGenerator:\n  - name: g\n    envs: [absent.env]\n")]), None, &["envs", "absent.env"]),
        case("kustomization: behavior merge", ApplyKustomize(&[("kustomization.yaml", "secretGenerator:\n  - name: g\n    behavior: merge\n    literals: [a=b]\n")]), None, &["behavior", "merge"]),
        case("kustomization: a resource that does not exist", ApplyKustomize(&[("kustomization.yaml", "resources: [absent.yaml]\n")]), None, &["resources", "absent.yaml"]),
        // ---- EncryptionConfiguration ----
        case("encryption: wrong apiVersion", EncryptionConfig("apiVersion: v9\nkind: EncryptionConfiguration\nresources: []\n"), None, &["apiVersion", "v9"]),
        case("encryption: no kind", EncryptionConfig("apiVersion: apiserver.config.k8s.io/v1\nresources: []\n"), None, &["kind"]),
        case("encryption: an unknown top-level field", EncryptionConfig("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\nextra: 1\n"), None, &["extra"]),
        case("encryption: no providers", EncryptionConfig(enc!("")), None, &["providers"]),
        case("encryption: an unknown provider", EncryptionConfig(enc!("      - aesfoo: {}\n")), None, &["aesfoo"]),
        case("encryption: an aesgcm key of 5 bytes", EncryptionConfig(enc!("      - aesgcm: {keys: [{name: k, secret: aGVsbG8=}]}\n")), None, &["keys[0].secret"]),
        case("encryption: an aesgcm key not in base64", EncryptionConfig(enc!("      - aesgcm: {keys: [{name: k, secret: '!!'}]}\n")), None, &["secret"]),
        case("encryption: aesgcm without keys", EncryptionConfig(enc!("      - aesgcm: {keys: []}\n")), None, &["keys"]),
        case("encryption: a key without a name", EncryptionConfig(enc!("      - aescbc: {keys: [{secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}]}\n")), None, &["name"]),
        case("encryption: kms without a name", EncryptionConfig(enc!("      - kms: {apiVersion: v2, endpoint: 'unix:///k.sock'}\n")), None, &["name"]),
        case("encryption: kms endpoint over TCP", EncryptionConfig(enc!("      - kms: {apiVersion: v2, name: k, endpoint: 'tcp://1.2.3.4:5'}\n")), None, &["endpoint"]),
        case("encryption: kms timeout -1s", EncryptionConfig(enc!("      - kms: {apiVersion: v2, name: k, endpoint: 'unix:///k.sock', timeout: -1s}\n")), None, &["timeout"]),
        case("encryption: kms timeout `soon`", EncryptionConfig(enc!("      - kms: {apiVersion: v2, name: k, endpoint: 'unix:///k.sock', timeout: soon}\n")), None, &["timeout"]),
        case("encryption: kms apiVersion v3", EncryptionConfig(enc!("      - kms: {apiVersion: v3, name: k, endpoint: 'unix:///k.sock'}\n")), None, &["apiVersion", "v3"]),
        case("encryption: kms v1 without the feature gate", EncryptionConfig(enc!("      - kms: {apiVersion: v1, name: k, endpoint: 'unix:///k.sock'}\n")), None, &["v1"]),
        case("encryption: kms v2 with a cachesize", EncryptionConfig(enc!("      - kms: {apiVersion: v2, name: k, endpoint: 'unix:///k.sock', cachesize: 10}\n")), None, &["cachesize"]),
        case("encryption: a provider with two kinds", EncryptionConfig(enc!("      - {identity: {}, aesgcm: {keys: [{name: k, secret: MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE=}]}}\n")), None, &["provider"]),
        case("encryption: a resource listed twice", EncryptionConfig("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets, secrets]\n    providers: [{identity: {}}]\n"), None, &["secrets"]),
        case("encryption: the file is empty", EncryptionConfig(""), None, &["empty"]),
        // ---- token files and the Unix users file ----
        case("token CSV: two columns", TokenCsv("tok1,alice\n"), None, &["tokens.csv", "3 columns"]),
        case("token lines: an empty file", TokenLines("\n# only a comment\n"), None, &["no token"]),
        case("encryption: kms v2 name with a colon", EncryptionConfig(enc!("      - kms: {apiVersion: v2, name: 'a:b', endpoint: 'unix:///k.sock'}\n")), None, &["name"]),
        case("encryption: two kms v2 providers of one name", EncryptionConfig(enc!("      - kms: {apiVersion: v2, name: k, endpoint: 'unix:///k.sock'}\n      - kms: {apiVersion: v2, name: k, endpoint: 'unix:///j.sock'}\n")), None, &["name", "k"]),
        case("token CSV: a record without a user", TokenCsv("tok1\n"), None, &["tokens.csv"]),
        case("token CSV: an unbalanced quote", TokenCsv("tok1,alice,1,\"dev\n"), None, &["tokens.csv"]),
        case("token lines: a token listed twice", TokenLines("line-token-1\nline-token-1\n"), None, &["tokens"]),
        case("unix users: an unknown field", UnixUsers("users:\n  - uid: 1\n    name: a\n    shell: /bin/sh\n"), None, &["shell"]),
        case("unix users: a uid listed twice", UnixUsers("users:\n  - {uid: 1, name: a}\n  - {uid: 1, name: b}\n"), None, &["users[1].uid", "Duplicate"]),
        case("unix users: an empty name", UnixUsers("users:\n  - {uid: 1, name: ''}\n"), None, &["name"]),
        case("unix users: a negative uid", UnixUsers("users:\n  - {uid: -1, name: a}\n"), None, &["users[0].uid"]),
        case("unix users: a group the server adds", UnixUsers("users:\n  - {uid: 1, name: a, groups: ['system:authenticated']}\n"), None, &["groups", "system:authenticated"]),
        // ---- RBAC and audit policies ----
        case("rbac: an unknown kind", Rbac(rbac!("kind: Rolle\nmetadata: {name: r}\n")), None, &["kind", "Rolle"]),
        case("rbac: a Role without a name", Rbac(rbac!("kind: Role\nmetadata: {namespace: p}\nrules: []\n")), None, &["metadata.name"]),
        case("rbac: a Role without a namespace", Rbac(rbac!("kind: Role\nmetadata: {name: r}\nrules: []\n")), None, &["metadata.namespace"]),
        case("rbac: a rule without verbs", Rbac(rbac!("kind: ClusterRole\nmetadata: {name: r}\nrules: [{apiGroups: [''], resources: [secrets]}]\n")), None, &["verbs"]),
        case("rbac: a subject of an unknown kind", Rbac(rbac!("kind: ClusterRoleBinding\nmetadata: {name: b}\nsubjects: [{kind: Robot, name: r}]\nroleRef: {kind: ClusterRole, name: r, apiGroup: rbac.authorization.k8s.io}\n")), None, &["subjects[0].kind", "Robot"]),
        case("rbac: a roleRef of an unknown kind", Rbac(rbac!("kind: ClusterRoleBinding\nmetadata: {name: b}\nsubjects: [{kind: User, name: u}]\nroleRef: {kind: Policy, name: r, apiGroup: rbac.authorization.k8s.io}\n")), None, &["roleRef.kind"]),
        case("rbac: YAML syntax error", Rbac("kind: [\n"), None, &["policy.yaml"]),
        case("audit: an unknown level", AuditPolicy(audit_policy!("  - level: Everything\n")), None, &["level", "Everything"]),
        case("audit: a rule without a level", AuditPolicy(audit_policy!("  - verbs: [get]\n")), None, &["level"]),
        case("audit: an unknown stage", AuditPolicy(audit_policy!("  - level: Metadata\n    omitStages: [Sometimes]\n")), None, &["omitStages", "Sometimes"]),
        case("audit: a non-resource URL without /", AuditPolicy(audit_policy!("  - level: Metadata\n    nonResourceURLs: [healthz]\n")), None, &["nonResourceURLs"]),
        case("audit: wrong apiVersion", AuditPolicy("apiVersion: audit.k8s.io/v9\nkind: Policy\nrules: []\n"), None, &["apiVersion"]),
    ]
}

/// What a case must not change: the store's objects and revision, and the keyring's keys.
#[derive(Debug, PartialEq, Eq)]
struct State {
    store_revision: String,
    objects: BTreeMap<String, String>,
    key_id: String,
    keys: Vec<(String, i32)>,
}

struct Clients {
    secrets: SecretsClient<Channel>,
    v2: V2Client<Channel>,
    v1: V1Client<Channel>,
    admin: KmsAdminClient<Channel>,
}

async fn state(c: &mut Clients) -> State {
    let list = c
        .secrets
        .list(pb::ListRequest::default())
        .await
        .expect("list")
        .into_inner();
    let objects = list
        .items
        .into_iter()
        .map(|s| {
            let m = s.metadata.unwrap_or_default();
            (format!("{}/{}", m.namespace, m.name), m.resource_version)
        })
        .collect();
    let status =
        c.v2.status(v2::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
    let keys = c
        .admin
        .list_keys(pb::ListKeysRequest {})
        .await
        .expect("keys")
        .into_inner()
        .keys
        .into_iter()
        .map(|k| (k.key_id, k.state))
        .collect();
    State {
        store_revision: list.resource_version,
        objects,
        key_id: status.key_id,
        keys,
    }
}

fn ciphertext(ct: Ct, made: &[u8]) -> Vec<u8> {
    let mut out = made.to_vec();
    match ct {
        Ct::Bytes(b) => return b.to_vec(),
        Ct::Made => {}
        Ct::Flipped(i) => {
            let i = i.min(out.len() - 1);
            out[i] ^= 1;
        }
        Ct::Truncated(n) => out.truncate(n),
        Ct::Extended => out.push(0),
    }
    out
}

/// Runs a store or KMS call; the error status, or `None` if it succeeded.
async fn grpc(c: &mut Clients, call: &Call, made: &[u8], key_id: &str) -> Option<tonic::Status> {
    let id = |s: &str| s.replace("{key_id}", key_id);
    let res: Result<(), tonic::Status> = match call {
        Call::Create(s) => c
            .secrets
            .create(pb::CreateRequest {
                secret: Some(s.clone()),
                dry_run: false,
            })
            .await
            .map(drop),
        Call::Update(s) => c
            .secrets
            .update(pb::UpdateRequest {
                secret: Some(s.clone()),
                dry_run: false,
            })
            .await
            .map(drop),
        Call::Get(ns, name, revision) => c
            .secrets
            .get(pb::GetRequest {
                namespace: (*ns).into(),
                name: (*name).into(),
                revision: *revision,
            })
            .await
            .map(drop),
        Call::Delete(ns, name, uid, rv) => c
            .secrets
            .delete(pb::DeleteRequest {
                namespace: (*ns).into(),
                name: (*name).into(),
                uid: (*uid).into(),
                resource_version: (*rv).into(),
                unsafe_ignore_decrypt_errors: false,
            })
            .await
            .map(drop),
        Call::List(ns, sel, limit, token) => c
            .secrets
            .list(pb::ListRequest {
                namespace: (*ns).into(),
                label_selector: (*sel).into(),
                limit: *limit,
                r#continue: (*token).into(),
                field_selector: String::new(),
            })
            .await
            .map(drop),
        Call::ListFields(fields) => c
            .secrets
            .list(pb::ListRequest {
                field_selector: (*fields).into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Call::WatchFields(fields) => c
            .secrets
            .watch(pb::WatchRequest {
                field_selector: (*fields).into(),
                ..Default::default()
            })
            .await
            .map(drop),
        Call::Watch(ns, rv, sel) => {
            let req = pb::WatchRequest {
                namespace: (*ns).into(),
                resource_version: (*rv).into(),
                label_selector: (*sel).into(),
                field_selector: String::new(),
            };
            match c.secrets.watch(req).await {
                Err(s) => Err(s),
                Ok(stream) => {
                    let first = tokio::time::timeout(
                        std::time::Duration::from_secs(30),
                        stream.into_inner().message(),
                    )
                    .await;
                    match first {
                        Ok(Err(s)) => Err(s),
                        _ => Ok(()),
                    }
                }
            }
        }
        Call::History(ns, name) => c
            .secrets
            .history(pb::HistoryRequest {
                namespace: (*ns).into(),
                name: (*name).into(),
            })
            .await
            .map(drop),
        Call::Rollback(ns, name, rev) => c
            .secrets
            .rollback(pb::RollbackRequest {
                namespace: (*ns).into(),
                name: (*name).into(),
                to_revision: *rev,
            })
            .await
            .map(drop),
        Call::V2Encrypt(n) => {
            c.v2.encrypt(v2::EncryptRequest {
                plaintext: vec![1; *n],
                uid: "catalogue".into(),
            })
            .await
            .map(drop)
        }
        Call::V2Decrypt(ct, k) => {
            c.v2.decrypt(v2::DecryptRequest {
                ciphertext: ciphertext(*ct, made),
                uid: "catalogue".into(),
                key_id: id(k),
                annotations: Default::default(),
            })
            .await
            .map(drop)
        }
        Call::V1Version(v) => {
            c.v1.version(v1::VersionRequest {
                version: (*v).into(),
            })
            .await
            .map(drop)
        }
        Call::V1Encrypt(v, n) => {
            c.v1.encrypt(v1::EncryptRequest {
                version: (*v).into(),
                plain: vec![1; *n],
            })
            .await
            .map(drop)
        }
        Call::V1Decrypt(v, ct) => {
            c.v1.decrypt(v1::DecryptRequest {
                version: (*v).into(),
                cipher: ciphertext(*ct, made),
            })
            .await
            .map(drop)
        }
        _ => unreachable!("not a gRPC call"),
    };
    res.err()
}

/// Runs a command line, file load or apply: its error text, or `None` if it succeeded.
fn local(dev: &DevServer, call: &Call, dir: &Path) -> Option<String> {
    let d = dir.display().to_string();
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _out, err) = dev.kw(&args);
        (code != 0).then_some(err)
    };
    match call {
        Call::Cli(args) => {
            if args.first() == Some(&"--server") {
                // The case's own --server comes first; DevServer adds another after it, which
                // clap refuses as a duplicate: run the binary directly.
                let (ok, _out, err) = crate::support::run(args);
                return (!ok).then_some(err);
            }
            run(args.iter().map(|a| a.replace("{dir}", &d)).collect())
        }
        Call::ApplyFile(text) => {
            let file = dir.join("manifest.yaml");
            std::fs::write(&file, text).expect("write the manifest");
            run(vec![
                "apply".into(),
                "-f".into(),
                file.display().to_string(),
            ])
        }
        Call::ApplyKustomize(files) => {
            let k = dir.join("k");
            std::fs::create_dir_all(&k).expect("mkdir");
            for (name, text) in *files {
                std::fs::write(k.join(name), text).expect("write a kustomization file");
            }
            run(vec!["apply".into(), "-k".into(), k.display().to_string()])
        }
        Call::EncryptionConfig(text) => {
            let file = dir.join("encryption.yaml");
            write_private(&file, text.as_bytes());
            config::load(&file, ParseOptions::default())
                .err()
                .map(|e| e.to_string())
        }
        Call::TokenCsv(text) | Call::TokenLines(text) => {
            let file = dir.join(if matches!(call, Call::TokenCsv(_)) {
                "tokens.csv"
            } else {
                "tokens"
            });
            write_private(&file, text.as_bytes());
            let format = if matches!(call, Call::TokenCsv(_)) {
                TokenFileFormat::Csv
            } else {
                TokenFileFormat::Lines
            };
            StaticTokens::load(&file, format)
                .err()
                .map(|e| e.to_string())
        }
        Call::UnixUsers(text) => {
            let file = dir.join("users.yaml");
            write_private(&file, text.as_bytes());
            UnixAuthenticator::with_users_file(0, &file)
                .err()
                .map(|e| e.to_string())
        }
        Call::Rbac(text) => {
            let file = dir.join("policy.yaml");
            write_private(&file, text.as_bytes());
            keyward::authz::Policy::load(&file)
                .err()
                .map(|e| e.to_string())
        }
        Call::AuditPolicy(text) => {
            let file = dir.join("audit-policy.yaml");
            write_private(&file, text.as_bytes());
            audit::Policy::load(&file).err().map(|e| e.to_string())
        }
        _ => unreachable!("a gRPC call"),
    }
}

/// Every file under `dir` with its content, to compare before and after a case.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p.display().to_string(),
                std::fs::read(&p).unwrap_or_default(),
            );
        }
    }
    out
}

#[test]
fn every_bad_input_is_a_clear_error_that_changes_nothing() {
    let all = cases();
    assert!(all.len() >= 100, "the catalogue has {} cases", all.len());
    let dev = DevServer::start();
    let rt = client_runtime();
    let data = dev.path("kw");
    let mut c = rt.block_on(async {
        let ch = |p: &Path| {
            let p = p.to_owned();
            async move { uds::unix_channel(&p).await.expect("connect") }
        };
        Clients {
            secrets: SecretsClient::new(ch(&data.join("keyward.sock")).await),
            v2: V2Client::new(ch(&data.join("kms.sock")).await),
            v1: V1Client::new(ch(&data.join("kms.sock")).await),
            admin: KmsAdminClient::new(ch(&data.join("kms-admin.sock")).await),
        }
    });
    // The objects cases refer to: `keep` (updated once, so revision 1 is stale) and `frozen`.
    let (made, key_id) = rt.block_on(async {
        let s = &mut c.secrets;
        s.create(pb::CreateRequest {
            secret: Some(sec("default", "keep", "", &[("k", b"v")])),
            dry_run: false,
        })
        .await
        .expect("create keep");
        let mut kept = sec("default", "keep", "", &[("k", b"v2")]);
        kept.metadata
            .as_mut()
            .expect("metadata")
            .labels
            .insert("app".into(), "web".into());
        s.update(pb::UpdateRequest {
            secret: Some(kept),
            dry_run: false,
        })
        .await
        .expect("update keep");
        s.create(pb::CreateRequest {
            secret: Some(frozen(|_| {})),
            dry_run: false,
        })
        .await
        .expect("create frozen");
        let r =
            c.v2.encrypt(v2::EncryptRequest {
                plaintext: vec![5; 32],
                uid: "made".into(),
            })
            .await
            .expect("encrypt")
            .into_inner();
        (r.ciphertext, r.key_id)
    });
    let mut failures = Vec::new();
    for (i, case) in all.iter().enumerate() {
        let dir = dev.path(&format!("case-{i}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let before = rt.block_on(state(&mut c));
        let files_before = tree(&dir);
        let (code, message) = match &case.call {
            Call::Cli(_)
            | Call::ApplyFile(_)
            | Call::ApplyKustomize(_)
            | Call::EncryptionConfig(_)
            | Call::TokenCsv(_)
            | Call::TokenLines(_)
            | Call::UnixUsers(_)
            | Call::Rbac(_)
            | Call::AuditPolicy(_) => (None, local(&dev, &case.call, &dir)),
            _ => match rt.block_on(grpc(&mut c, &case.call, &made, &key_id)) {
                Some(s) => (Some(s.code()), Some(s.message().to_owned())),
                None => (None, None),
            },
        };
        let mut problems = Vec::new();
        match &message {
            None => problems.push("succeeded".to_owned()),
            Some(m) => {
                for w in case.want {
                    if !m.contains(w) {
                        problems.push(format!("the error does not contain {w:?}"));
                    }
                }
                if m.contains("panicked") || m.contains("RUST_BACKTRACE") {
                    problems.push("a panic".into());
                }
            }
        }
        if case.code.is_some() && code != case.code {
            problems.push(format!("code {code:?}, want {:?}", case.code));
        }
        let after = rt.block_on(state(&mut c));
        if after != before {
            problems.push(format!(
                "the store or keyring changed: {before:?} -> {after:?}"
            ));
        }
        // Given files are unchanged, and nothing was created next to them (data directories,
        // sockets, written Secrets).
        let files_after = tree(&dir);
        let given: Vec<&String> = files_before.keys().collect();
        let new: Vec<&String> = files_after
            .keys()
            .filter(|k| !files_before.contains_key(*k) && !is_input(k))
            .collect();
        if !new.is_empty() {
            problems.push(format!("created {new:?}"));
        }
        for k in given {
            if files_after.get(k) != files_before.get(k) {
                problems.push(format!("changed {k}"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case {i} ({}): {}\n    error: {}",
                case.what,
                problems.join("; "),
                message
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad inputs were not clear errors that changed nothing:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// Files a case writes as its input (not created by the program under test).
fn is_input(path: &str) -> bool {
    [
        "manifest.yaml",
        "/k",
        "kustomization.yaml",
        "encryption.yaml",
        "tokens.csv",
        "tokens",
        "users.yaml",
        "policy.yaml",
        "audit-policy.yaml",
    ]
    .iter()
    .any(|n| path.ends_with(n))
}
