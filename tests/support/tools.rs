//! External programs the tests run or cross-check against (kubectl, bash, etcd and etcdctl,
//! python3 with the packages of `tests/python/requirements.txt`). A test whose program is
//! missing fails, naming what to install; none passes silently without it. `.ci/run` and the
//! README's test command install every one of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How to install the Python packages the cross-checks use.
pub const PIP_INSTALL: &str = "python3 -m pip install -r tests/python/requirements.txt";

/// The path of `program` on `PATH` (or `program` itself if it is a path to an executable file);
/// fails the test, saying to run `install`, if there is none.
pub fn require_tool(program: &str, install: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!(
            "`{program}` is needed for this test and was not found on PATH; install it with \
             `{install}`"
        )
    })
}

/// `program` resolved as a shell would: a name with a `/` as it is, else the first executable
/// file of that name in a `PATH` directory.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
}

/// `python3`, after checking that it can import every module of `modules` (e.g. `grpc`,
/// `cryptography`, `nacl`); fails the test, saying how to install them, if it cannot.
pub fn require_python(modules: &[&str]) -> PathBuf {
    let python = require_tool("python3", "apt-get install python3 python3-pip");
    let out = Command::new(&python)
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 cannot import {}; install the test packages with `{PIP_INSTALL}`\n{}",
        modules.join(", "),
        String::from_utf8_lossy(&out.stderr)
    );
    python
}

/// Runs `python3 ARGS` (after [`require_python`]`(modules)`) with `stdin` on its standard input;
/// returns its standard output, failing with its output and how to install the packages if it
/// failed.
pub fn python(modules: &[&str], args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new(require_python(modules))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("stdin");
    drop(input);
    let out = child.wait_with_output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 failed (install: {PIP_INSTALL})\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `bash`, the shell of the README walkthrough and of the completion check.
pub fn bash() -> PathBuf {
    require_tool("bash", "apt-get install bash")
}

/// `kubectl`, for comparing `keyward apply -k` with `kubectl kustomize`.
pub fn kubectl() -> PathBuf {
    require_tool(
        "kubectl",
        "apt-get install kubectl (from the Kubernetes or Google Cloud SDK apt repository)",
    )
}

/// The kubectl minor versions the Kubernetes API tests drive (the `kubectl` package ships
/// `kubectl.1.27` ... `kubectl.1.33`).
pub const KUBECTL_MINORS: [u32; 7] = [27, 28, 29, 30, 31, 32, 33];

/// `kubectl.1.<minor>`: on PATH, or where the Google Cloud SDK's `kubectl` package puts it;
/// fails the test, naming the package, if it is missing.
pub fn kubectl_minor(minor: u32) -> PathBuf {
    let name = format!("kubectl.1.{minor}");
    let sdk = PathBuf::from("/usr/lib/google-cloud-sdk/bin").join(&name);
    find_program(&name)
        .or_else(|| find_program(sdk.to_str().unwrap_or_default()))
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is needed for this test and was not found; install the `kubectl` \
                 package (apt-get install kubectl: it ships kubectl.1.27 ... kubectl.1.33)"
            )
        })
}
