//! Secrets as environment variables, like a container's `envFrom` (every key, named
//! `PREFIX` + key) and `env[].valueFrom.secretKeyRef` (one key as one variable). Keys of an
//! `envFrom` Secret that would set a loader or interpreter variable ([`is_loader_var`]: `PATH`,
//! `LD_PRELOAD`, ...) are skipped unless allowed by name: whoever writes the Secret must not
//! choose the code the consumer runs.

use std::collections::BTreeMap;
use std::ffi::OsString;

use super::ProjectionError;
use crate::names::{DataKey, Namespace, SecretName};
use crate::store::Secret;

/// Every key of a Secret as a variable named `prefix` + key (like `envFrom`).
#[derive(Debug, Clone)]
pub struct EnvFrom {
    /// The Secret's name.
    pub secret: SecretName,
    /// Prepended to each key; empty or a valid variable name start.
    pub prefix: String,
}

/// One key of a Secret as one variable (like `secretKeyRef`).
#[derive(Debug, Clone)]
pub struct EnvVar {
    /// The variable's name.
    pub var: String,
    /// The Secret's name.
    pub secret: SecretName,
    /// The key.
    pub key: DataKey,
}

/// Something [`build_env`] skipped, for the caller to tell the user. Never holds a value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvNotice<'a> {
    /// An [`EnvFrom`]'s Secret does not exist (optional): nothing set from it.
    FromMissing {
        /// The Secret.
        secret: &'a str,
    },
    /// Keys of an [`EnvFrom`]'s Secret that are not valid variable names with the prefix.
    Skipped {
        /// The Secret.
        secret: &'a str,
        /// The prefix.
        prefix: &'a str,
        /// The keys skipped.
        keys: Vec<&'a str>,
    },
    /// Keys of an [`EnvFrom`]'s Secret that would set loader or interpreter variables
    /// ([`is_loader_var`]) and were not allowed by name.
    Unsafe {
        /// The Secret.
        secret: &'a str,
        /// The variables not set.
        vars: Vec<String>,
    },
    /// An [`EnvVar`]'s Secret does not exist (optional): the variable is not set.
    VarMissing {
        /// The Secret.
        secret: &'a str,
        /// The variable.
        var: &'a str,
    },
    /// An [`EnvVar`]'s key is not in its Secret (optional): the variable is not set.
    KeyMissing {
        /// The Secret.
        secret: &'a str,
        /// The key.
        key: &'a str,
        /// The variable.
        var: &'a str,
    },
}

/// What is wrong with `s` as an environment variable name, in kubelet's words (apimachinery's
/// `IsEnvVarName`, the rule of Kubernetes 1.27–1.33: `[-._a-zA-Z][-._a-zA-Z0-9]*`, and not
/// `.`, `..` or starting with `..`); empty if it is a valid name.
pub fn env_name_errors(s: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut b = s.bytes();
    let word = |c: u8| c.is_ascii_alphabetic() || matches!(c, b'-' | b'.' | b'_');
    let valid = matches!(b.next(), Some(c) if word(c)) && b.all(|c| word(c) || c.is_ascii_digit());
    if !valid {
        errors.push(crate::names::regex_error(
            "a valid environment variable name must consist of alphabetic characters, digits, \
             '_', '-', or '.', and must not start with a digit",
            "[-._a-zA-Z][-._a-zA-Z0-9]*",
            &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
        ));
    }
    errors.extend(crate::names::chdir_prefix_error(s).map(str::to_owned));
    errors
}

/// Whether `s` is a valid environment variable name ([`env_name_errors`] has nothing).
pub fn is_env_name(s: &str) -> bool {
    env_name_errors(s).is_empty()
}

/// Variables whose value is code or a command that a program runs (`EDITOR`, `VIMINIT`,
/// `GIT_SEQUENCE_EDITOR`, `CC`, `MAKEFLAGS`, `GOFLAGS`, `RUSTC_WRAPPER`, `PROMPT_COMMAND`),
/// that choose which program, library, module, plugin or start-up file is loaded (`PATH`,
/// `LD_*`, `PYTHON*`, `DOTNET_STARTUP_HOOKS`, `BASH_ENV`), or that point a program at a
/// configuration that names commands to run (`HOME`, `XDG_*`, `KUBECONFIG`, `GIT_CONFIG*`,
/// `AWS_CONFIG_FILE`): exact names, prefixes and suffixes below. Names are matched as given
/// (environment names are case-sensitive), except npm's `npm_config_*`, which it reads in any
/// case. A list cannot know every program: this one covers the shells, compilers, build tools,
/// editors, pagers, language runtimes and cloud tools a process is commonly started with.
pub fn is_loader_var(name: &str) -> bool {
    const NAMES: &[&str] = &[
        // Shells and the C library.
        "PATH",
        "SHELL",
        "BASH_ENV",
        "ENV",
        "ZDOTDIR",
        "SHELLOPTS",
        "BASHOPTS",
        "PS0",
        "PS1",
        "PS2",
        "PS3",
        "PS4",
        "IFS",
        "INPUTRC",
        "HOME",
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "LOCPATH",
        "NLSPATH",
        // Language runtimes.
        "CLASSPATH",
        "JAVA_HOME",
        "JRE_HOME",
        "TCLLIBPATH",
        "PHPRC",
        "R_PROFILE",
        "R_PROFILE_USER",
        "R_ENVIRON",
        "R_ENVIRON_USER",
        "EMACSLOADPATH",
        // Programs other programs start, and their start-up commands.
        "VISUAL",
        "BROWSER",
        "TERMINAL",
        "LESSOPEN",
        "LESSCLOSE",
        "VIMINIT",
        "GVIMINIT",
        "EXINIT",
        "MYVIMRC",
        "MYGVIMRC",
        "VIMRUNTIME",
        // Git (its other variables, such as GIT_TOKEN, are not read by git).
        "GIT_SSH",
        "GIT_EXEC_PATH",
        "GIT_EXTERNAL_DIFF",
        "GIT_TEMPLATE_DIR",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_TRACE",
        "GIT_TRACE2",
        "GIT_TRACE2_EVENT",
        "GIT_TRACE_PACKET",
        "GIT_NAMESPACE",
        // Compilers and build tools.
        "CC",
        "CXX",
        "CPP",
        "FC",
        "F77",
        "LD",
        "AR",
        "AS",
        "NM",
        "RANLIB",
        "OBJCOPY",
        "OBJDUMP",
        "STRIP",
        "MAKE",
        "MAKEFLAGS",
        "MFLAGS",
        "GNUMAKEFLAGS",
        "MAKEFILES",
        "CFLAGS",
        "CXXFLAGS",
        "CPPFLAGS",
        "LDFLAGS",
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
        "GOFLAGS",
        "GOROOT",
        "GOPATH",
        "GOPROXY",
        "GOTOOLCHAIN",
        "GOENV",
        "GOBIN",
        "GOEXPERIMENT",
        "GOWORK",
        "GOTOOLDIR",
        "RUSTC",
        "RUSTDOC",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        // Configurations that name commands or modules to run.
        "KUBECONFIG",
        "DOCKER_CONFIG",
        "AWS_CONFIG_FILE",
        "CLOUDSDK_CONFIG",
        "BOTO_CONFIG",
        "AZURE_CONFIG_DIR",
        "TF_CLI_CONFIG_FILE",
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "OPENSSL_MODULES",
        "GNUPGHOME",
        "KRB5_CONFIG",
    ];
    const PREFIXES: &[&str] = &[
        "LD_",
        "DYLD_",
        "BASH_FUNC_",
        "PYTHON",
        "PERL",
        "RUBY",
        "GEM_",
        "BUNDLE_",
        "NODE_",
        "LUA_",
        "GIT_CONFIG",
        "PHP_",
        "JAVA_",
        "_JAVA_",
        "JDK_",
        "MAVEN_",
        "GRADLE_",
        "SBT_",
        "ANT_",
        "CATALINA_",
        "DOTNET_",
        "COMPLUS_",
        "CORECLR_",
        "CARGO_",
        "RUSTUP_",
        "CGO_",
        "PIP_",
        "PIPENV_",
        "POETRY_",
        "CONDA",
        "YARN_",
        "DENO_",
        "BUN_",
        "ERL_",
        "ELIXIR_",
        "MIX_",
        "JULIA_",
        "GUILE_",
        "OCAML",
        "SYSTEMD_",
        "XDG_",
        "GTK_",
        "GDK_",
        "GIO_",
        "GST_",
        "QT_",
        "LIBGL_",
        "VK_",
        "HELM_",
        "GIT_SSL_",
    ];
    const SUFFIXES: &[&str] = &[
        "EDITOR",
        "PAGER",
        "ASKPASS",
        "_OPTS",
        "_OPTIONS",
        "_COMMAND",
        "_HOOK",
        "_HOOKS",
        "_WRAPPER",
        "_LAUNCHER",
        "_SHELL",
        "_PLUGIN_PATH",
        "_MODULES",
    ];
    NAMES.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || SUFFIXES.iter().any(|x| name.ends_with(x))
        || name.to_ascii_uppercase().starts_with("NPM_CONFIG_")
}

/// A value as an environment variable: UTF-8 without NUL, or what is wrong with it.
fn env_value(v: &[u8]) -> Result<OsString, &'static str> {
    if v.contains(&0) {
        return Err("contains a NUL byte");
    }
    std::str::from_utf8(v)
        .map(OsString::from)
        .map_err(|_| "is not valid UTF-8")
}

/// The variables of `env_from` (in order), then of `env` (in order, so they win), from the
/// Secrets of `namespace` in `secrets` (`None`: the Secret does not exist). Missing Secrets
/// and, when `optional`, missing keys are skipped and reported to `notice`; keys that are not
/// valid variable names are skipped and reported, and so are `env_from` keys that would set a
/// loader or interpreter variable ([`is_loader_var`]) not named in `allow`. (An [`EnvVar`]
/// names its variable itself, so it is set whatever it is.)
pub fn build_env<'a>(
    namespace: &Namespace,
    secrets: &'a BTreeMap<&SecretName, Option<Secret>>,
    env_from: &'a [EnvFrom],
    env: &'a [EnvVar],
    optional: bool,
    allow: &[String],
    mut notice: impl FnMut(EnvNotice<'a>),
) -> Result<Vec<(String, OsString)>, ProjectionError> {
    let value = |secret: &SecretName, key: &str, v: &[u8]| {
        env_value(v).map_err(|problem| ProjectionError::EnvValue {
            namespace: namespace.to_string(),
            secret: secret.to_string(),
            key: key.to_owned(),
            problem,
        })
    };
    let mut out = Vec::new();
    for from in env_from {
        let Some(Some(s)) = secrets.get(&from.secret) else {
            notice(EnvNotice::FromMissing {
                secret: from.secret.as_str(),
            });
            continue;
        };
        let mut skipped = Vec::new();
        let mut unsafe_vars = Vec::new();
        for (key, v) in &s.data {
            let var = format!("{}{key}", from.prefix);
            if !is_env_name(&var) {
                skipped.push(key.as_str());
                continue;
            }
            if is_loader_var(&var) && !allow.contains(&var) {
                unsafe_vars.push(var);
                continue;
            }
            out.push((var, value(&from.secret, key, v.as_slice())?));
        }
        if !unsafe_vars.is_empty() {
            notice(EnvNotice::Unsafe {
                secret: from.secret.as_str(),
                vars: unsafe_vars,
            });
        }
        if !skipped.is_empty() {
            notice(EnvNotice::Skipped {
                secret: from.secret.as_str(),
                prefix: &from.prefix,
                keys: skipped,
            });
        }
    }
    for e in env {
        let Some(Some(s)) = secrets.get(&e.secret) else {
            notice(EnvNotice::VarMissing {
                secret: e.secret.as_str(),
                var: &e.var,
            });
            continue;
        };
        match s.data.get(e.key.as_str()) {
            Some(v) => out.push((
                e.var.clone(),
                value(&e.secret, e.key.as_str(), v.as_slice())?,
            )),
            None if optional => notice(EnvNotice::KeyMissing {
                secret: e.secret.as_str(),
                key: e.key.as_str(),
                var: &e.var,
            }),
            None => {
                return Err(ProjectionError::MissingEnvKey {
                    namespace: namespace.to_string(),
                    secret: e.secret.to_string(),
                    key: e.key.to_string(),
                    var: e.var.clone(),
                    keys: s.data.keys().cloned().collect(),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::SecretBytes;

    #[test]
    fn names_follow_kubelet() {
        for ok in [
            "_a1",
            "A",
            "a.b",
            "my-key",
            ".lead",
            "-",
            "MY_ENV.NAME",
            "a..b",
        ] {
            assert!(is_env_name(ok), "{ok}");
        }
        let regex = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";
        assert_eq!(env_name_errors(""), [regex]);
        assert_eq!(env_name_errors("9a"), [regex]);
        assert_eq!(env_name_errors("a=b"), [regex]);
        assert_eq!(env_name_errors("."), ["must not be '.'"]);
        assert_eq!(env_name_errors(".."), ["must not be '..'"]);
        assert_eq!(env_name_errors("..x"), ["must not start with '..'"]);
        assert_eq!(env_name_errors("..x!"), [regex, "must not start with '..'"]);
    }

    fn secret(data: &[(&str, &[u8])]) -> Option<Secret> {
        Some(Secret {
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretBytes::new(v.to_vec())))
                .collect(),
            ..Secret::default()
        })
    }

    fn name(n: &str) -> SecretName {
        SecretName::try_from(n).unwrap()
    }

    fn ns(n: &str) -> Namespace {
        Namespace::try_from(n).unwrap()
    }

    #[test]
    fn env_from_then_env_with_notices() {
        let (db, gone) = (name("db"), name("gone"));
        let secrets = BTreeMap::from([
            (
                &db,
                secret(&[
                    ("user", b"admin"),
                    ("pass", b"pw"),
                    ("a.b", b"x"),
                    ("9x", b"y"),
                ]),
            ),
            (&gone, None),
        ]);
        let from = |secret: &str, prefix: &str| EnvFrom {
            secret: name(secret),
            prefix: prefix.into(),
        };
        let var = |var: &str, secret: &str, key: &str| EnvVar {
            var: var.into(),
            secret: name(secret),
            key: DataKey::try_from(key).unwrap(),
        };
        let env_from = [from("db", ""), from("gone", "")];
        let env = [
            var("USER", "db", "user"),
            var("X", "gone", "k"),
            var("Y", "db", "nope"),
        ];
        let mut notices = Vec::new();
        let vars = build_env(&ns("ns"), &secrets, &env_from, &env, true, &[], |n| {
            notices.push(n)
        })
        .unwrap();
        let vars: Vec<(&str, &str)> = vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            vars,
            [
                ("a.b", "x"),
                ("pass", "pw"),
                ("user", "admin"),
                ("USER", "admin")
            ]
        );
        assert_eq!(
            notices,
            [
                EnvNotice::Skipped {
                    secret: "db",
                    prefix: "",
                    keys: vec!["9x"]
                },
                EnvNotice::FromMissing { secret: "gone" },
                EnvNotice::VarMissing {
                    secret: "gone",
                    var: "X"
                },
                EnvNotice::KeyMissing {
                    secret: "db",
                    key: "nope",
                    var: "Y"
                },
            ]
        );
        let e = build_env(&ns("ns"), &secrets, &[], &env, false, &[], drop).unwrap_err();
        assert!(
            matches!(&e, ProjectionError::MissingEnvKey { keys, .. } if keys == &["9x", "a.b", "pass", "user"]),
            "{e}"
        );
        assert_eq!(e.to_string(), "secret ns/db has no key \"nope\"");
    }

    #[test]
    fn loader_variables_from_a_secret_are_skipped_unless_allowed() {
        for v in [
            "PATH",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
            "BASH_ENV",
            "IFS",
            "PERLLIB",
            "PERL5LIB",
            "_JAVA_OPTIONS",
            "JDK_JAVA_OPTIONS",
            "GLIBC_TUNABLES",
            "PYTHONWARNINGS",
            "PYTHONUSERBASE",
            "LUA_INIT",
            "GIT_CONFIG_COUNT",
            "npm_config_script_shell",
            "BASH_FUNC_ls%%",
            // Each of these ran a command chosen by its value (or its configuration's).
            "GIT_SEQUENCE_EDITOR",
            "VIMINIT",
            "EXINIT",
            "CC",
            "MAKEFLAGS",
            "GOFLAGS",
            "RUSTC_WRAPPER",
            "SYSTEMD_PAGER",
            "DOTNET_STARTUP_HOOKS",
            "CONFIG_SHELL",
            "HOME",
            "XDG_CONFIG_HOME",
            "KUBECONFIG",
            "AWS_CONFIG_FILE",
            "MAVEN_OPTS",
            "GST_PLUGIN_PATH",
        ] {
            assert!(is_loader_var(v), "{v}");
        }
        for v in [
            "DB_PATH",
            "USER",
            "GOOGLE_API_KEY",
            "DATABASE_URL",
            "HTTPS_PROXY",
            "RUST_LOG",
            "PATHS",
            "XLD_PRELOAD",
            "GIT_TOKEN",
            "path",
            "API_KEY",
        ] {
            assert!(!is_loader_var(v), "{v}");
        }
        let s = name("s");
        let secrets = BTreeMap::from([(
            &s,
            secret(&[
                ("PATH", b"/evil"),
                ("LD_PRELOAD", b"/evil.so"),
                ("USER", b"app"),
            ]),
        )]);
        let from = [EnvFrom {
            secret: s.clone(),
            prefix: String::new(),
        }];
        let mut notices = Vec::new();
        let vars = build_env(&ns("n"), &secrets, &from, &[], false, &[], |n| {
            notices.push(n)
        })
        .unwrap();
        assert_eq!(vars, [("USER".to_owned(), OsString::from("app"))]);
        assert_eq!(
            notices,
            [EnvNotice::Unsafe {
                secret: "s",
                vars: vec!["LD_PRELOAD".into(), "PATH".into()]
            }]
        );
        let vars = build_env(
            &ns("n"),
            &secrets,
            &from,
            &[],
            false,
            &["PATH".into()],
            drop,
        )
        .unwrap();
        let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "USER"]);
    }

    #[test]
    fn env_values_must_be_utf8_without_nul() {
        assert_eq!(env_value(b"ok=1").unwrap(), "ok=1");
        assert_eq!(env_value(b"a\0b").unwrap_err(), "contains a NUL byte");
        assert_eq!(env_value(b"\xff").unwrap_err(), "is not valid UTF-8");
        let s = name("s");
        let secrets = BTreeMap::from([(&s, secret(&[("k", b"a\0b")]))]);
        let e = build_env(
            &ns("n"),
            &secrets,
            &[EnvFrom {
                secret: s.clone(),
                prefix: String::new(),
            }],
            &[],
            false,
            &[],
            drop,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret n/s key \"k\": the value contains a NUL byte, so it cannot be an environment variable"
        );
    }
}
