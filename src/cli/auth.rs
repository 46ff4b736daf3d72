//! `keyward auth can-i`, `keyward auth whoami` and `keyward create token`, with kubectl's output
//! and exit codes: `can-i` prints `yes` (exit 0) or `no` (exit 1, ` - <reason>` when the server
//! gave one), `--list` the rules table, `whoami` the ATTRIBUTE/VALUE table.

use clap::{Args, Subcommand};

use super::client::{connect_auth, server_error, ClientArgs};
use super::output::table;
use super::CliError;
use crate::pb::keyward_v1 as pb;

/// `keyward auth ...`.
#[derive(Debug, Subcommand)]
pub(super) enum AuthCommand {
    /// Check whether an action is allowed (prints yes or no; exit status 1 for no).
    ///
    /// Examples:
    ///   keyward auth can-i get secrets/db -n prod
    ///   keyward auth can-i list secrets -n prod --as system:serviceaccount:prod:app
    ///   keyward auth can-i --list -n prod
    #[command(verbatim_doc_comment, name = "can-i")]
    CanI(CanIArgs),
    /// Print who the server says you are (user, uid, groups).
    Whoami(WhoamiArgs),
}

/// `keyward auth can-i`.
#[derive(Debug, Args)]
pub(super) struct CanIArgs {
    /// The verb, e.g. get, list, watch, create, update, delete, or * for all.
    verb: Option<String>,
    /// TYPE, TYPE/NAME or a non-resource URL, e.g. secrets, secrets/db, raw.keyward.io.
    resource: Option<String>,
    /// Namespace.
    #[arg(
        short = 'n',
        long = "namespace",
        default_value = "default",
        value_name = "NS"
    )]
    namespace: String,
    /// In every namespace.
    #[arg(short = 'A', long = "all-namespaces", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = super::flags::parse_go_bool, value_name = "BOOL", hide_possible_values = true)]
    all_namespaces: bool,
    /// A subresource, e.g. token (of serviceaccounts).
    #[arg(long, value_name = "SUBRESOURCE", default_value = "")]
    subresource: String,
    /// List every action allowed in the namespace.
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = super::flags::parse_go_bool, value_name = "BOOL", hide_possible_values = true)]
    list: bool,
    /// Print nothing; only the exit status tells.
    #[arg(short = 'q', long, default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = super::flags::parse_go_bool, value_name = "BOOL", hide_possible_values = true)]
    quiet: bool,
    /// With --list: no header row.
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = super::flags::parse_go_bool, value_name = "BOOL", hide_possible_values = true)]
    no_headers: bool,
}

/// What a can-i asks, once kubectl's checks of the arguments passed.
enum Question {
    List,
    Check(pb::AccessReviewRequest),
}

impl CanIArgs {
    /// kubectl's reading and checks of the arguments (`CanIOptions.Complete` and `Validate`),
    /// with its messages and its warnings on stderr, in its order.
    fn question(&self) -> Result<Question, CliError> {
        let args = usize::from(self.verb.is_some()) + usize::from(self.resource.is_some());
        if self.list {
            if args != 0 {
                return Err(CliError::new(
                    "list option must be specified with no arguments",
                ));
            }
            if self.quiet || self.all_namespaces || !self.subresource.is_empty() {
                return Err(CliError::new("list option can't be specified with neither quiet, all-namespaces nor subresource options"));
            }
            return Ok(Question::List);
        }
        let (Some(verb), Some(target)) = (&self.verb, &self.resource) else {
            return Err(CliError::new("you must specify two arguments: verb resource or verb resource/resourceName.\nSee 'keyward auth can-i -h' for help and examples."));
        };
        let mapped = if target.starts_with('/') {
            None
        } else {
            let (ty, _) = target.split_once('/').unwrap_or((target, ""));
            let (mapped, warning) = resource_for(ty);
            if let Some(w) = warning {
                warn(&w);
            }
            Some(mapped)
        };
        match &mapped {
            None => {
                if !self.subresource.is_empty() {
                    return Err(CliError::new(
                        "--subresource can not be used with NonResourceURL",
                    ));
                }
                if !NON_RESOURCE_VERBS.contains(&verb.as_str()) {
                    warn(&format!("verb '{verb}' is not a known verb"));
                }
            }
            Some(mapped) if !self.all_namespaces => {
                if mapped.namespaced == Some(false) {
                    let res = &mapped.resource;
                    warn(&match mapped.group.as_str() {
                        "" => format!("resource '{res}' is not namespace scoped"),
                        g => format!("resource '{res}' is not namespace scoped in group '{g}'"),
                    });
                }
                if !RESOURCE_VERBS.contains(&verb.as_str()) {
                    warn(&format!("verb '{verb}' is not a known verb"));
                }
            }
            _ => {}
        }
        if self.no_headers {
            return Err(CliError::new(
                "--no-headers cannot be set without --list specified",
            ));
        }
        let verb = verb.clone();
        Ok(Question::Check(match mapped {
            None => pb::AccessReviewRequest {
                verb,
                path: target.clone(),
                ..Default::default()
            },
            Some(mapped) => pb::AccessReviewRequest {
                namespace: if self.all_namespaces {
                    String::new()
                } else {
                    self.namespace.clone()
                },
                verb,
                group: mapped.group,
                resource: mapped.resource,
                subresource: self.subresource.clone(),
                name: target
                    .split_once('/')
                    .map(|(_, n)| n)
                    .unwrap_or_default()
                    .to_owned(),
                path: String::new(),
            },
        }))
    }
}

/// `keyward auth whoami`.
#[derive(Debug, Args)]
pub(super) struct WhoamiArgs {
    /// Output format: json or yaml (a SelfSubjectReview, as kubectl prints it); a table if not
    /// given.
    #[arg(short = 'o', long = "output", value_name = "FORMAT", value_parser = ["json", "yaml"])]
    output: Option<String>,
}

/// `keyward create token`.
#[derive(Debug, Args)]
pub(super) struct CreateTokenArgs {
    /// The service account.
    name: String,
    /// Namespace.
    #[arg(
        short = 'n',
        long = "namespace",
        default_value = "default",
        value_name = "NS"
    )]
    namespace: String,
    /// Requested lifetime, e.g. 1h or 30m (at least 10m; default: 1h).
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,
    /// Audience of the token (repeatable; default: the server's audiences).
    #[arg(long, value_name = "AUDIENCE")]
    audience: Vec<String>,
}

/// A can-i resource argument as kubectl resolves it with the REST mapper it builds from the
/// server's discovery (`CanIOptions.resourceFor`, against keyward's discovery documents).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mapped {
    group: String,
    resource: String,
    /// Whether discovery lists the resource as namespaced (`None` when it does not list it).
    namespaced: Option<bool>,
}

/// kubectl's resolution of `arg`: the word is lowercased and read as `RESOURCE.VERSION.GROUP`
/// when it has two dots or more, else `RESOURCE.GROUP` (`schema.ParseResourceArg`); short names
/// and singular names resolve as kubectl's shortcut expander and REST mapper resolve them. A
/// word discovery does not have is sent as typed, with kubectl's warning (but for `users` and
/// `groups`, which only impersonation knows).
fn resource_for(arg: &str) -> (Mapped, Option<String>) {
    let unmapped = |namespaced| Mapped {
        group: String::new(),
        resource: arg.to_owned(),
        namespaced,
    };
    if arg == "*" {
        return (unmapped(Some(true)), None);
    }
    let word = arg.to_lowercase();
    let parts: Vec<&str> = word.splitn(3, '.').collect();
    if let [res, version, group] = parts[..] {
        if let Some(m) = map(group, version, res) {
            return (m, None);
        }
    }
    let (res, group) = word.split_once('.').unwrap_or((&word, ""));
    if let Some(m) = map(group, "", res) {
        return (m, None);
    }
    // keyward's own permissions (README, "Who may read which Secret"), which only its gRPC
    // calls check, so that the Kubernetes API's discovery does not list them.
    if group == "keyward.io" && ["raw", "encryption", "migrations"].contains(&res) {
        let own = Mapped {
            group: group.to_owned(),
            resource: res.to_owned(),
            namespaced: Some(false),
        };
        return (own, None);
    }
    let warning = match group {
        "" if matches!(res, "users" | "groups") => None,
        "" => Some(format!("the server doesn't have a resource type '{res}'")),
        g => Some(format!(
            "the server doesn't have a resource type '{res}' in group '{g}'"
        )),
    };
    (unmapped(None), warning)
}

/// One resource of keyward's discovery, as a REST mapper holds it.
struct Known {
    group: String,
    version: String,
    plural: String,
    singular: String,
    short: Vec<String>,
    namespaced: bool,
}

fn known_resources() -> Vec<Known> {
    crate::kube::discovery::all_resources()
        .into_iter()
        // Subresources are not resources a mapper resolves.
        .filter(|(_, _, r)| !r["name"].as_str().unwrap_or("/").contains('/'))
        .map(|(group, version, r)| {
            let text = |key: &str| r[key].as_str().unwrap_or_default().to_owned();
            let singular = match text("singularName") {
                s if s.is_empty() => text("kind").to_lowercase(),
                s => s,
            };
            Known {
                group,
                version,
                plural: text("name"),
                singular,
                short: r["shortNames"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect(),
                namespaced: r["namespaced"].as_bool().unwrap_or(false),
            }
        })
        .collect()
}

/// `RESTMapper.ResourceFor` behind kubectl's shortcut expander (`expandResourceShortcut`, then
/// `DefaultRESTMapper.resourcesForResource`), the group's preferred version first.
fn map(group: &str, version: &str, resource: &str) -> Option<Mapped> {
    let known = known_resources();
    let in_group = |k: &Known, g: &str| g.is_empty() || k.group == g;
    let (mut group, mut resource) = (group.to_owned(), resource.to_owned());
    let exact = known
        .iter()
        .any(|k| in_group(k, &group) && (k.plural == resource || k.singular == resource));
    if !exact {
        let short = |prefix: bool| {
            known.iter().find(|k| {
                let group_ok = if prefix {
                    k.group.starts_with(group.as_str())
                } else {
                    in_group(k, &group)
                };
                group_ok && k.short.contains(&resource)
            })
        };
        let long = short(false).or_else(|| (!group.is_empty()).then(|| short(true)).flatten());
        if let Some(k) = long {
            (group, resource) = (k.group.clone(), k.plural.clone());
        }
    }
    let named = |k: &&Known| k.plural == resource || k.singular == resource;
    let found = match (group.is_empty(), version.is_empty()) {
        (false, false) => known
            .iter()
            .filter(named)
            .find(|k| k.version == version && k.group == group),
        (true, false) => known.iter().filter(named).find(|k| k.version == version),
        (false, true) => known
            .iter()
            .filter(named)
            .find(|k| k.group == group)
            .or_else(|| {
                known
                    .iter()
                    .filter(named)
                    .find(|k| k.group.starts_with(group.as_str()))
            }),
        (true, true) => known.iter().find(named),
    }?;
    Some(Mapped {
        group: found.group.clone(),
        resource: found.plural.clone(),
        namespaced: Some(found.namespaced),
    })
}

/// The verbs kubectl knows for resources and for non-resource URLs; others get a warning.
const RESOURCE_VERBS: [&str; 16] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "use",
    "bind",
    "impersonate",
    "*",
    "approve",
    "sign",
    "escalate",
    "attest",
];
const NON_RESOURCE_VERBS: [&str; 8] = [
    "get", "put", "post", "head", "options", "delete", "patch", "*",
];

/// kubectl's warnings, on stderr: `Warning: `, the message and, as kubectl 1.27–1.33 print
/// these (a message ending in a newline, printed with one more), an empty line.
fn warn(message: &str) {
    eprintln!("Warning: {message}\n");
}

/// Go's `%v` of a string slice: `[a b]`.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Runs `keyward auth ...`.
pub(super) fn auth(cmd: AuthCommand, client: &ClientArgs) -> Result<(), CliError> {
    match cmd {
        AuthCommand::CanI(a) => match a.question()? {
            Question::List => super::process::runtime()?.block_on(can_i_list(a, client)),
            Question::Check(req) => {
                super::process::runtime()?.block_on(can_i(a.quiet, req, client))
            }
        },
        AuthCommand::Whoami(a) => super::process::runtime()?.block_on(whoami(a, client)),
    }
}

async fn can_i(
    quiet: bool,
    req: pb::AccessReviewRequest,
    client: &ClientArgs,
) -> Result<(), CliError> {
    let st = connect_auth(client)
        .await?
        .access_review(req)
        .await
        .map_err(server_error)?
        .into_inner();
    if st.allowed {
        if !quiet {
            println!("yes");
        }
        return Ok(());
    }
    if !quiet {
        let mut line = "no".to_owned();
        for extra in [&st.reason, &st.evaluation_error] {
            if !extra.is_empty() {
                line.push_str(" - ");
                line.push_str(extra);
            }
        }
        println!("{line}");
    }
    Err(CliError::silent())
}

async fn can_i_list(a: CanIArgs, client: &ClientArgs) -> Result<(), CliError> {
    let st = connect_auth(client)
        .await?
        .rules_review(pb::RulesReviewRequest {
            namespace: a.namespace,
        })
        .await
        .map_err(server_error)?
        .into_inner();
    let mut rows = vec![vec![
        "Resources".to_owned(),
        "Non-Resource URLs".to_owned(),
        "Resource Names".to_owned(),
        "Verbs".to_owned(),
    ]];
    for r in listed_rules(&st) {
        rows.push(vec![
            combine_resource_group(&r.resources, &r.api_groups),
            go_list(&r.non_resource_urls),
            go_list(&r.resource_names),
            go_list(&r.verbs),
        ]);
    }
    if a.no_headers {
        rows.remove(0);
    }
    print!("{}", table(&rows));
    // As kubectl: only when the server says the list is incomplete (an evaluation error alone,
    // such as a binding to a missing role, leaves the list complete).
    if st.incomplete {
        eprintln!(
            "Warning: the list may be incomplete: {}",
            st.evaluation_error
        );
    }
    Ok(())
}

/// kubectl's `describe.CombineResourceGroup`: the first resource with the first group
/// (`secrets`, `raw.keyward.io`, a subresource after the group: `serviceaccounts/token` in
/// group `g` is `serviceaccounts.g/token`).
fn combine_resource_group(resources: &[String], groups: &[String]) -> String {
    let Some(first) = resources.first() else {
        return String::new();
    };
    let (res, sub) = match first.split_once('/') {
        Some((res, sub)) => (res, Some(sub)),
        None => (first.as_str(), None),
    };
    let mut out = res.to_owned();
    if let Some(g) = groups.first().filter(|g| !g.is_empty()) {
        out.push('.');
        out.push_str(g);
    }
    if let Some(sub) = sub {
        out.push('/');
        out.push_str(sub);
    }
    out
}

/// One rule as `kubectl auth can-i --list` handles it (`rbacv1.PolicyRule`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ListedRule {
    verbs: Vec<String>,
    api_groups: Vec<String>,
    resources: Vec<String>,
    resource_names: Vec<String>,
    non_resource_urls: Vec<String>,
}

impl ListedRule {
    /// The Go `String()` of the rule, which kubectl sorts the rules by.
    fn go_string(&self) -> String {
        format!(
            "&PolicyRule{{Verbs:{},APIGroups:{},Resources:{},ResourceNames:{},NonResourceURLs:{},}}",
            go_list(&self.verbs),
            go_list(&self.api_groups),
            go_list(&self.resources),
            go_list(&self.resource_names),
            go_list(&self.non_resource_urls)
        )
    }
}

/// The rules of `st` as kubectl lists them: each broken down to one group, resource and name
/// (or one URL and one verb) per rule (`BreakdownRule`), the verbs of rules for the same group,
/// resource and name merged (`CompactRules`), sorted by their Go string (`SortableRuleSlice`).
fn listed_rules(st: &pb::RulesReviewResponse) -> Vec<ListedRule> {
    let one = |v: &String| vec![v.clone()];
    let mut broken = Vec::new();
    for r in &st.resource_rules {
        for g in &r.api_groups {
            for res in &r.resources {
                let names: Vec<Vec<String>> = if r.resource_names.is_empty() {
                    vec![Vec::new()]
                } else {
                    r.resource_names.iter().map(one).collect()
                };
                for resource_names in names {
                    broken.push(ListedRule {
                        verbs: r.verbs.clone(),
                        api_groups: one(g),
                        resources: one(res),
                        resource_names,
                        non_resource_urls: Vec::new(),
                    });
                }
            }
        }
    }
    for r in &st.non_resource_rules {
        for url in &r.non_resource_urls {
            for verb in &r.verbs {
                broken.push(ListedRule {
                    verbs: one(verb),
                    api_groups: Vec::new(),
                    resources: Vec::new(),
                    resource_names: Vec::new(),
                    non_resource_urls: one(url),
                });
            }
        }
    }
    let mut compact: Vec<ListedRule> = Vec::new();
    for rule in broken {
        let same = compact.iter_mut().find(|c| {
            rule.non_resource_urls.is_empty()
                && c.non_resource_urls.is_empty()
                && (&c.api_groups, &c.resources, &c.resource_names)
                    == (&rule.api_groups, &rule.resources, &rule.resource_names)
        });
        match same {
            Some(c) => {
                for v in rule.verbs {
                    if !c.verbs.contains(&v) {
                        c.verbs.push(v);
                    }
                }
            }
            None => compact.push(rule),
        }
    }
    compact.sort_by_cached_key(ListedRule::go_string);
    compact
}

async fn whoami(a: WhoamiArgs, client: &ClientArgs) -> Result<(), CliError> {
    let u = connect_auth(client)
        .await?
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .map_err(|s| match s.code() {
            // kubectl's words for a refusal, not the server's.
            tonic::Code::PermissionDenied => {
                CliError::new(
                    "the selfsubjectreviews API is not enabled in the cluster or you do not have permission to call it",
                )
            }
            _ => server_error(s),
        })?
        .into_inner();
    if let Some(format) = a.output.as_deref() {
        print!("{}", review_text(&u, format)?);
        return Ok(());
    }
    let mut rows = vec![
        vec!["ATTRIBUTE".to_owned(), "VALUE".to_owned()],
        vec!["Username".to_owned(), u.username],
    ];
    if !u.uid.is_empty() {
        rows.push(vec!["UID".to_owned(), u.uid]);
    }
    rows.push(vec!["Groups".to_owned(), go_list(&u.groups)]);
    for (k, v) in &u.extra {
        rows.push(vec![format!("Extra: {k}"), go_list(&v.values)]);
    }
    print!("{}", table(&rows));
    Ok(())
}

/// The SelfSubjectReview of `u` as kubectl prints it: `json`, Go's field order indented by four
/// spaces (`json.MarshalIndent`); `yaml`, `sigs.k8s.io/yaml` (keys sorted).
fn review_text(u: &pb::UserInfo, format: &str) -> Result<String, CliError> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Review<'a> {
        kind: &'static str,
        api_version: &'static str,
        metadata: Metadata,
        status: ReviewStatus<'a>,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Metadata {
        creation_timestamp: Option<String>,
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ReviewStatus<'a> {
        user_info: UserInfo<'a>,
    }
    #[derive(serde::Serialize)]
    struct UserInfo<'a> {
        #[serde(skip_serializing_if = "str::is_empty")]
        username: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        uid: &'a str,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        groups: &'a [String],
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        extra: std::collections::BTreeMap<&'a str, &'a [String]>,
    }
    let review = Review {
        kind: "SelfSubjectReview",
        api_version: "authentication.k8s.io/v1",
        // kube-apiserver's SelfSubjectReview is created when it answers (now, as close as
        // this side can tell).
        metadata: Metadata {
            creation_timestamp: Some(crate::go_time::format_rfc3339_utc(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
            )),
        },
        status: ReviewStatus {
            user_info: UserInfo {
                username: &u.username,
                uid: &u.uid,
                groups: &u.groups,
                extra: u
                    .extra
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.values.as_slice()))
                    .collect(),
            },
        },
    };
    let encode_failed =
        |e: serde_json::Error| CliError::new(format!("cannot encode the review: {e}"));
    let mut json = Vec::new();
    let indent = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    serde::Serialize::serialize(
        &review,
        &mut serde_json::Serializer::with_formatter(&mut json, indent),
    )
    .map_err(encode_failed)?;
    match format {
        "yaml" => crate::kube::request::json_to_yaml(&json)
            .ok_or_else(|| CliError::new("cannot encode the review as YAML")),
        _ => Ok(String::from_utf8_lossy(&json).into_owned() + "\n"),
    }
}

/// Runs `keyward create token SA`: prints the token.
pub(super) fn create_token(a: CreateTokenArgs, client: &ClientArgs) -> Result<(), CliError> {
    let expiration_seconds = match &a.duration {
        None => 0,
        Some(d) => {
            let d = super::flags::parse_duration(d).map_err(|e| {
                CliError::new(format!("--duration: {d:?} is not a duration: {e}"))
                    .hint("use a number with a unit, e.g. 1h or 30m")
            })?;
            if d.as_secs() == 0 {
                return Err(CliError::new("--duration: must be greater than 0"));
            }
            d.as_secs() as i64
        }
    };
    super::process::runtime()?.block_on(async {
        let t = connect_auth(client)
            .await?
            .create_token(pb::CreateTokenRequest {
                namespace: a.namespace,
                service_account: a.name,
                audiences: a.audience,
                expiration_seconds,
            })
            .await
            .map_err(server_error)?
            .into_inner();
        // kube-apiserver's warning, as kubectl prints it.
        if expiration_seconds > 0 && t.expiration_seconds > 0 && t.expiration_seconds < expiration_seconds {
            eprintln!(
                "Warning: requested expiration of {expiration_seconds} seconds shortened to {} seconds",
                t.expiration_seconds
            );
        }
        println!("{}", t.token);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn rules_are_listed_as_kubectl_lists_them() {
        let rule = |verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]| {
            pb::ResourceRule {
                verbs: strings(verbs),
                api_groups: strings(groups),
                resources: strings(resources),
                resource_names: strings(names),
            }
        };
        let st = pb::RulesReviewResponse {
            resource_rules: vec![
                rule(&["get"], &[""], &["secrets"], &["db", "api"]),
                rule(&["list"], &[""], &["secrets", "configmaps"], &[]),
                rule(&["watch", "list"], &[""], &["secrets"], &[]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectrulesreviews"],
                    &[],
                ),
            ],
            non_resource_rules: vec![pb::NonResourceRule {
                verbs: strings(&["get"]),
                non_resource_urls: strings(&["/version", "/api"]),
            }],
            ..Default::default()
        };
        let got: Vec<(String, String, String, String)> = listed_rules(&st)
            .into_iter()
            .map(|r| {
                (
                    r.resources.join(","),
                    go_list(&r.non_resource_urls),
                    go_list(&r.resource_names),
                    go_list(&r.verbs),
                )
            })
            .collect();
        let want = [
            ("selfsubjectrulesreviews", "[]", "[]", "[create]"),
            ("", "[/api]", "[]", "[get]"),
            ("", "[/version]", "[]", "[get]"),
            ("secrets", "[]", "[api]", "[get]"),
            ("secrets", "[]", "[db]", "[get]"),
            // "[list watch]" sorts before "[list]": ' ' before ']'.
            ("secrets", "[]", "[]", "[list watch]"),
            ("configmaps", "[]", "[]", "[list]"),
        ];
        let want: Vec<(String, String, String, String)> = want
            .iter()
            .map(|(a, b, c, d)| ((*a).into(), (*b).into(), (*c).into(), (*d).into()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn resources_resolve_as_kubectls_mapper_resolves_them() {
        let mapped = |arg: &str| {
            let (m, warning) = resource_for(arg);
            (m.group, m.resource, m.namespaced, warning)
        };
        let found = |group: &str, resource: &str, namespaced: bool| {
            (
                group.to_owned(),
                resource.to_owned(),
                Some(namespaced),
                None,
            )
        };
        for (arg, want) in [
            ("secrets", found("", "secrets", true)),
            ("Secret", found("", "secrets", true)),
            ("secrets.v1.", found("", "secrets", true)),
            ("ev", found("", "events", true)),
            ("svc", found("", "services", true)),
            (
                "selfsubjectaccessreviews.authorization",
                found("authorization.k8s.io", "selfsubjectaccessreviews", false),
            ),
            (
                "selfsubjectreview.v1beta1.authentication.k8s.io",
                found("authentication.k8s.io", "selfsubjectreviews", false),
            ),
            ("*", (String::new(), "*".to_owned(), Some(true), None)),
            ("users", (String::new(), "users".to_owned(), None, None)),
            // keyward's own, which discovery does not list.
            ("raw.keyward.io", found("keyward.io", "raw", false)),
            (
                "Migrations.keyward.io",
                found("keyward.io", "migrations", false),
            ),
            (
                "encryption.keyward.io",
                found("keyward.io", "encryption", false),
            ),
        ] {
            assert_eq!(mapped(arg), want, "{arg}");
        }
        // Not in discovery: sent as typed (case kept), with kubectl's warning.
        for (arg, warning) in [
            ("Pods", "the server doesn't have a resource type 'pods'"),
            ("sa", "the server doesn't have a resource type 'sa'"),
            (
                "secrets.apps",
                "the server doesn't have a resource type 'secrets' in group 'apps'",
            ),
            (
                "serviceaccounts",
                "the server doesn't have a resource type 'serviceaccounts'",
            ),
        ] {
            assert_eq!(
                mapped(arg),
                (
                    String::new(),
                    arg.to_owned(),
                    None,
                    Some(warning.to_owned())
                ),
                "{arg}"
            );
        }
    }
}
