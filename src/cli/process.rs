//! The process around a command: hardening (no core dumps, private files), logging to stderr,
//! the tokio runtime, and SIGTERM/SIGINT with a bounded drain for the long-running commands.

use std::future::Future;
use std::io::IsTerminal as _;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{CliError, LogFormat};

/// The umask and core-dump limit the process started with, restored for commands that
/// `keyward run` executes.
static INHERITED: std::sync::OnceLock<(rustix::fs::Mode, rustix::process::Rlimit)> =
    std::sync::OnceLock::new();

/// Prevents key material from reaching core dumps and makes new files private by default.
/// Call first thing in `main`, before any thread starts.
pub fn harden_process() {
    let umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    let core = rustix::process::getrlimit(rustix::process::Resource::Core);
    // Only the soft limit: the hard limit stays, so the original can be restored for children.
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Core,
        rustix::process::Rlimit {
            current: Some(0),
            maximum: core.maximum,
        },
    );
    let _ = INHERITED.set((umask, core));
    quiet_closed_stdout();
}

/// `println!` panics when stdout is a pipe its reader closed (`keyward get secrets | head`):
/// that ends the process with the error the commands that write stdout themselves give, not a
/// panic's report. Every other panic is reported as before.
fn quiet_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if let Some(why) = message.strip_prefix("failed printing to stdout: ") {
            if why.starts_with("Broken pipe") {
                // stderr may be the same closed pipe: what cannot be written is dropped.
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "error: cannot write to stdout: {why}");
                std::process::exit(1);
            }
        }
        report(info);
    }));
}

/// Restores the umask and core-dump limit the process started with, just before `exec`-ing
/// another program (the dumpable flag is reset by `execve` itself).
pub(super) fn restore_inherited() {
    if let Some((umask, core)) = INHERITED.get() {
        rustix::process::umask(*umask);
        let _ = rustix::process::setrlimit(rustix::process::Resource::Core, *core);
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): as text, in colour only when stderr
/// is a terminal, or as JSON lines (one object a line, the event's fields at the top level next
/// to `timestamp`, `level`, `target` and `message`); either way with control characters escaped
/// (`EscapingStderr`) so that a client-supplied string cannot forge a log line. The HTTP/2 and
/// gRPC transport crates are additionally capped at `debug`: their `trace` output can include
/// payload bytes.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let cap = ["h2", "hyper", "hyper_util", "tonic", "tower"]
        .into_iter()
        .fold(Targets::new().with_default(LevelFilter::TRACE), |t, c| {
            t.with_target(c, LevelFilter::DEBUG)
        });
    let ansi = std::io::stderr().is_terminal();
    let writer = move || EscapingStderr {
        inner: std::io::stderr(),
        ansi,
    };
    let layer = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(env.and(cap)))
        .init();
}

/// stderr for log lines: each write is one formatted event, whose control characters (a
/// newline or carriage return inside a field, a terminal escape) are written as `\xNN`; only
/// the event's final newline, and with `ansi` the colour codes, pass as they are.
struct EscapingStderr {
    inner: std::io::Stderr,
    ansi: bool,
}

impl std::io::Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(&escape_controls(buf, self.ansi))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `line` with its control characters but a final newline (and ESC, with `ansi`) as `\xNN`.
fn escape_controls(line: &[u8], ansi: bool) -> std::borrow::Cow<'_, [u8]> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let bad = |b: u8| (b < 0x20 && !(ansi && b == 0x1b)) || b == 0x7f;
    if !body.iter().copied().any(bad) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    for &b in body {
        if bad(b) {
            out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        } else {
            out.push(b);
        }
    }
    if body.len() < line.len() {
        out.push(b'\n');
    }
    std::borrow::Cow::Owned(out)
}

/// A private (0700) temporary directory for plaintext such as `edit`'s file: in
/// `$XDG_RUNTIME_DIR` (a per-user tmpfs) when it is set, else `/dev/shm` (tmpfs), else the
/// system's temporary directory.
pub(super) fn plaintext_temp_dir(prefix: &str) -> Result<tempfile::TempDir, CliError> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
        .or_else(|| {
            let shm = std::path::Path::new("/dev/shm");
            shm.is_dir().then(|| shm.to_owned())
        })
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .map_err(|e| {
            CliError::new(format!(
                "cannot create a temporary directory in {}: {e}",
                base.display()
            ))
        })
}

/// Removes `dir` and exits (128 + the signal's number) on SIGHUP or SIGTERM, and on SIGINT or
/// SIGQUIT unless `editing` is set: the editor in the foreground gets those and decides, as
/// with git. Destructors do not run when a signal kills the process, so without this a
/// plaintext file would stay behind.
pub(super) fn remove_on_signal(
    rt: &tokio::runtime::Runtime,
    dir: std::path::PathBuf,
    editing: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let _entered = rt.enter();
    let handler = |kind| {
        signal(kind).map_err(|e| CliError::new(format!("cannot install a signal handler: {e}")))
    };
    let mut hup = handler(SignalKind::hangup())?;
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    let mut quit = handler(SignalKind::quit())?;
    rt.spawn(async move {
        loop {
            let (code, stoppable) = tokio::select! {
                _ = hup.recv() => (129, false),
                _ = term.recv() => (143, false),
                _ = int.recv() => (130, true),
                _ = quit.recv() => (131, true),
            };
            if stoppable && editing.load(std::sync::atomic::Ordering::SeqCst) {
                continue;
            }
            let _ = std::fs::remove_dir_all(&dir);
            std::process::exit(code);
        }
    });
    Ok(())
}

/// The multi-threaded runtime every command that talks gRPC runs on.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start the async runtime: {e}")))
}

/// Cancels `token` on SIGTERM or SIGINT, after telling `on_signal` which one came
/// (`"SIGTERM"` or `"SIGINT"`). The handlers are installed before this returns, so call it
/// first: a signal during start-up then also stops the process cleanly.
pub(super) fn cancel_on_signal(
    token: CancellationToken,
    on_signal: impl FnOnce(&'static str) + Send + 'static,
) -> Result<(), CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let handler = |kind| {
        signal(kind).map_err(|e| CliError::new(format!("cannot install a signal handler: {e}")))
    };
    let mut term = handler(SignalKind::terminate())?;
    let mut int = handler(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        on_signal(name);
        token.cancel();
    });
    Ok(())
}

/// [`cancel_on_signal`] for a server: the signal is logged, and starts the drain.
pub(super) fn drain_on_signal(token: CancellationToken) -> Result<(), CliError> {
    cancel_on_signal(token, |name| tracing::info!("{name}: draining"))
}

/// Runs `server` until it ends or `token` is cancelled (servers then stop accepting and
/// drain), waiting at most `drain` for in-flight calls.
pub(super) async fn run_until_signal(
    drain: Duration,
    token: CancellationToken,
    server: impl Future<Output = Result<(), CliError>>,
) -> Result<(), CliError> {
    tokio::pin!(server);
    tokio::select! {
        // The server also watches the token, so it may see it first and be done already.
        res = &mut server => res?,
        _ = token.cancelled() => match tokio::time::timeout(drain, server).await {
            Ok(res) => res?,
            Err(_) => tracing::warn!(timeout = ?drain, "drain timed out; closing remaining calls"),
        },
    }
    if token.is_cancelled() {
        tracing::info!("stopped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn log_lines_escape_control_characters_but_their_own_newline() {
        assert_eq!(&*escape_controls(b"plain line\n", false), b"plain line\n");
        assert_eq!(
            &*escape_controls(b"uid=a\nFORGED INFO ok\r\t\x1b[31m\n", false),
            b"uid=a\\x0aFORGED INFO ok\\x0d\\x09\\x1b[31m\n"
        );
        assert_eq!(
            &*escape_controls(b"\x1b[2mtime\x1b[0m x\n", true),
            b"\x1b[2mtime\x1b[0m x\n"
        );
        assert_eq!(&*escape_controls(b"a\x7fb", false), b"a\\x7fb");
    }
}
