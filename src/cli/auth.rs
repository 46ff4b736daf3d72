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
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
    /// A subresource, e.g. token (of serviceaccounts).
    #[arg(long, value_name = "SUBRESOURCE", default_value = "")]
    subresource: String,
    /// List every action allowed in the namespace.
    #[arg(long)]
    list: bool,
    /// Print nothing; only the exit status tells.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// With --list: no header row.
    #[arg(long)]
    no_headers: bool,
}

impl CanIArgs {
    /// kubectl's checks of the arguments (`CanIOptions.Complete` and `Validate`), with its
    /// messages.
    fn validate(&self) -> Result<(), CliError> {
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
            return Ok(());
        }
        if args != 2 {
            return Err(CliError::new("you must specify two arguments: verb resource or verb resource/resourceName.\nSee 'keyward auth can-i -h' for help and examples."));
        }
        if self.resource.as_deref().is_some_and(|r| r.starts_with('/'))
            && !self.subresource.is_empty()
        {
            return Err(CliError::new(
                "--subresource can not be used with NonResourceURL",
            ));
        }
        if self.no_headers {
            return Err(CliError::new(
                "--no-headers cannot be set without --list specified",
            ));
        }
        Ok(())
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

/// Resource names the CLI accepts for the resources keyward knows, as kubectl's discovery
/// resolves them: (name, group). As kubectl, the word is lowercased first and read as
/// `RESOURCE.VERSION.GROUP` when it has two dots or more, else `RESOURCE.GROUP`
/// (`schema.ParseResourceArg`).
fn resource(word: &str) -> (String, String) {
    let word = word.to_lowercase();
    let (res, group) = match word.splitn(3, '.').collect::<Vec<_>>()[..] {
        [res, _version, group] => (res, group),
        [res, group] => (res, group),
        _ => (word.as_str(), ""),
    };
    let res = match res {
        "secret" => "secrets",
        "sa" | "serviceaccount" => "serviceaccounts",
        r => r,
    };
    (res.to_owned(), group.to_owned())
}

/// Go's `%v` of a string slice: `[a b]`.
fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Runs `keyward auth ...`.
pub(super) fn auth(cmd: AuthCommand, client: &ClientArgs) -> Result<(), CliError> {
    if let AuthCommand::CanI(a) = &cmd {
        a.validate()?;
    }
    super::process::runtime()?.block_on(async {
        match cmd {
            AuthCommand::CanI(a) if a.list => can_i_list(a, client).await,
            AuthCommand::CanI(a) => can_i(a, client).await,
            AuthCommand::Whoami(a) => whoami(a, client).await,
        }
    })
}

async fn can_i(a: CanIArgs, client: &ClientArgs) -> Result<(), CliError> {
    let verb = a.verb.unwrap_or_default();
    let target = a.resource.unwrap_or_default();
    let namespace = if a.all_namespaces {
        String::new()
    } else {
        a.namespace
    };
    let req = if target.starts_with('/') {
        pb::AccessReviewRequest {
            verb,
            path: target,
            ..Default::default()
        }
    } else {
        let (ty, name) = target.split_once('/').unwrap_or((&target, ""));
        let (res, group) = resource(ty);
        pb::AccessReviewRequest {
            namespace,
            verb,
            group,
            resource: res,
            subresource: a.subresource,
            name: name.to_owned(),
            path: String::new(),
        }
    };
    let st = connect_auth(client)
        .await?
        .access_review(req)
        .await
        .map_err(server_error)?
        .into_inner();
    if st.allowed {
        if !a.quiet {
            println!("yes");
        }
        return Ok(());
    }
    if !a.quiet {
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
        .map_err(server_error)?
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
        metadata: Metadata {
            creation_timestamp: None,
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
}
