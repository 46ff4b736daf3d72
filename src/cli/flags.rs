//! Flag values several commands share: durations (one parser, and the rules each kind of flag
//! adds to it) and who may connect to a socket.

use std::time::Duration;

use super::CliError;
use crate::uds::{self, SocketAccess, SocketError};

/// A boolean as Go's `strconv.ParseBool` reads kubectl's flags: `--all-namespaces=false`.
/// Such a flag takes `num_args = 0..=1, require_equals = true, default_missing_value = "true"`,
/// so that the flag alone still means `true` and a following word is not its value (pflag's).
pub(super) fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!(
            "{s:?} is not a boolean (true, false, 1, 0, t, f, TRUE, FALSE, True, False)"
        )),
    }
}

/// The one parser of durations given in flags: humantime's `90d`, `12h`, `500ms`, `1m 30s`.
pub(super) fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s.trim())
}

/// A positive duration, or `never` (`None`): `--rotate-after`, `--drain-timeout`,
/// `--auto-migrate-settle`, `--etcd-stale-after`.
pub(super) fn duration_or_never(flag: &str, s: &str) -> Result<Option<Duration>, CliError> {
    if s == "never" {
        return Ok(None);
    }
    match parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(Some(d)),
        _ => Err(CliError::new(format!(
            "{flag}: {s:?} is not a positive duration such as 90d, 12h, 30s, or \"never\""
        ))),
    }
}

/// A duration of at most a day, zero only when `zero_ok`: the load generators' `--duration`,
/// `--warmup` and `--timeout`.
pub(super) fn duration_up_to_a_day(
    flag: &str,
    s: &str,
    zero_ok: bool,
) -> Result<Duration, CliError> {
    let d = parse_duration(s).map_err(|e| {
        CliError::new(format!("{flag}: {s:?} is not a duration: {e}"))
            .hint("use a number with a unit, e.g. 10s, 500ms or 1m")
    })?;
    if d.is_zero() && !zero_ok {
        return Err(CliError::new(format!("{flag}: must be more than 0")));
    }
    if d > Duration::from_secs(86_400) {
        return Err(CliError::new(format!(
            "{flag}: must be at most 24h (got {s})"
        )));
    }
    Ok(d)
}

/// Who may connect to a server's sockets: the owner only (0600), or also `--socket-group`
/// (0660), a group name or gid.
pub(super) fn socket_access(group: Option<&str>) -> Result<SocketAccess, CliError> {
    let group = group
        .map(|g| {
            uds::resolve_group(g).map_err(|e| match e {
                SocketError::UnknownGroup(_) => CliError::new(format!("--socket-group: {e}")),
                e => e.into(),
            })
        })
        .transpose()?;
    Ok(SocketAccess { group })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_name_the_flag() {
        assert_eq!(
            duration_or_never("--rotate-after", "90d").unwrap(),
            Some(Duration::from_secs(90 * 86400))
        );
        assert_eq!(duration_or_never("--rotate-after", "never").unwrap(), None);
        for bad in ["0s", "soon", ""] {
            let e = duration_or_never("--drain-timeout", bad).unwrap_err();
            assert_eq!(
                e.message,
                format!(
                    "--drain-timeout: {bad:?} is not a positive duration such as 90d, 12h, 30s, or \"never\""
                )
            );
        }
        assert_eq!(
            duration_up_to_a_day("--warmup", " 500ms ", true).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            duration_up_to_a_day("--warmup", "0s", true).unwrap(),
            Duration::ZERO
        );
        let e = duration_up_to_a_day("--timeout", "0ms", false).unwrap_err();
        assert_eq!(e.message, "--timeout: must be more than 0");
        let e = duration_up_to_a_day("--warmup", "2d", true).unwrap_err();
        assert_eq!(e.message, "--warmup: must be at most 24h (got 2d)");
        let e = duration_up_to_a_day("--warmup", "soon", true).unwrap_err();
        assert_eq!(
            e.message,
            "--warmup: \"soon\" is not a duration: expected number at 0"
        );
        assert_eq!(
            e.hint.as_deref(),
            Some("use a number with a unit, e.g. 10s, 500ms or 1m")
        );
    }

    #[test]
    fn socket_groups_name_the_flag() {
        assert_eq!(socket_access(None).unwrap(), SocketAccess { group: None });
        assert_eq!(socket_access(Some("4242")).unwrap().group, Some(4242));
        let e = socket_access(Some("no-such-group-kw")).unwrap_err();
        assert_eq!(
            e.message,
            "--socket-group: no group named \"no-such-group-kw\" in /etc/group"
        );
    }
}
