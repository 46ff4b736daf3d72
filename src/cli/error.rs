//! The command line's error: what went wrong and what to do next ([`CliError`]), and how a
//! failed gRPC call is told to the user, decided by the [`Reason`] the server put in the status
//! (by its gRPC code when a server sends none).

use tonic::{Code, Status};

use crate::reason::Reason;

/// A command-line error: what went wrong and, when known, what to do about it.
#[derive(Debug)]
pub struct CliError {
    pub(super) message: String,
    pub(super) hint: Option<String>,
    /// Printed as is, without the `error: ` prefix (kubectl-style server errors).
    pub(super) plain: bool,
    /// The process's exit status (1 unless set).
    pub(super) status: u8,
}

impl CliError {
    /// An error printed as `error: MESSAGE`.
    pub(super) fn new(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            hint: None,
            plain: false,
            status: 1,
        }
    }

    /// Ends the process with `status` instead of 1 (`keyward run`: 127 for a command not
    /// found, 126 for one that cannot be run, as shells and `env` do).
    pub(super) fn status(mut self, status: u8) -> Self {
        self.status = status;
        self
    }

    /// An error already reported on stderr: exit non-zero, print nothing more.
    pub(super) fn silent() -> Self {
        Self::plain("")
    }

    /// An error printed as is, without the `error: ` prefix.
    pub(super) fn plain(message: impl std::fmt::Display) -> Self {
        Self {
            plain: true,
            ..Self::new(message)
        }
    }

    /// Adds what to do next, printed as `hint: HINT`.
    pub(super) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Prints the error on stderr, as the process ends with it.
    pub(super) fn print(&self) {
        match (self.plain, self.message.is_empty()) {
            (true, true) => {}
            (true, false) => eprintln!("{}", self.message),
            (false, _) => eprintln!("error: {}", self.message),
        }
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::new(e)
    }
}

/// `e` followed by each of its causes that says something new, joined by `: ` (tonic's
/// `transport error: No such file or directory (os error 2)`), for errors whose own text is too
/// general to act on.
pub(super) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

/// A store server's error as kubectl prints it: `Error from server (NotFound): secrets "x" not
/// found`, or `The Secret "x" is invalid: ...` for validation errors.
pub(super) fn server_error(s: Status) -> CliError {
    server_error_when(s, "")
}

/// A store server's error with kubectl's context before the server's message (`error when
/// creating "m.yaml": `); an Invalid error is printed from its details alone, as kubectl does.
pub(super) fn server_error_when(s: Status, context: &str) -> CliError {
    if crate::uds::refused_while_closing(&s) {
        return CliError::plain(format!(
            "Error from server ({}): {context}the server closed the connection (shutting down or restarting) before it took the request; nothing was done",
            Reason::ServiceUnavailable
        ));
    }
    if Reason::of(&s).is_none() {
        // Made by the client's transport, not sent by a server.
        if let Some(cause) = std::error::Error::source(&s) {
            return CliError::new(format!(
                "{context}Unable to connect to the server: {}",
                with_causes(cause)
            ));
        }
    }
    match Reason::of(&s).unwrap_or_else(|| store_reason(s.code())) {
        Reason::Invalid => CliError::plain(format!("The {}", s.message())),
        reason => CliError::plain(format!(
            "Error from server ({reason}): {context}{}",
            s.message()
        )),
    }
}

/// A list's or watch's error: a selector the server refused is reported in kubectl's words,
/// with both selectors (`Unable to find "/v1, Resource=secrets" that match label selector
/// "a=(", field selector "": ...`), not under the request's field names.
pub(super) fn selector_error(s: Status, label: &str, field: &str) -> CliError {
    let refused = (s.code() == Code::InvalidArgument)
        .then(|| {
            ["label_selector: ", "field_selector: "]
                .iter()
                .find_map(|p| s.message().strip_prefix(p))
        })
        .flatten();
    let Some(message) = refused.map(str::to_owned) else {
        return server_error(s);
    };
    let context = format!(
        "Unable to find \"/v1, Resource=secrets\" that match label selector {}, field selector {}: ",
        crate::authz::go_quote(label),
        crate::authz::go_quote(field)
    );
    server_error_when(Status::new(s.code(), message), &context)
}

/// The reason of a store status that carries none (an older server, or the transport), from
/// its code.
fn store_reason(code: Code) -> Reason {
    match code {
        Code::InvalidArgument => Reason::BadRequest,
        Code::NotFound => Reason::NotFound,
        Code::AlreadyExists => Reason::AlreadyExists,
        Code::Aborted => Reason::Conflict,
        Code::OutOfRange => Reason::Expired,
        Code::Unavailable => Reason::ServiceUnavailable,
        Code::Unauthenticated => Reason::Unauthorized,
        Code::PermissionDenied => Reason::Forbidden,
        Code::DeadlineExceeded => Reason::Timeout,
        _ => Reason::InternalError,
    }
}

/// A KMS plugin admin error: `error: not found: key_id: no key "x"`.
pub(super) fn admin_error(s: Status) -> CliError {
    if Reason::of(&s) == Some(Reason::Forbidden) {
        return CliError::new(s.message()).hint(
            "the plugin admits other callers with `kms serve --admin-allow-uid/--admin-allow-gid`",
        );
    }
    if s.code() == Code::Unimplemented && Reason::of(&s).is_none() {
        return CliError::new(
            "the socket does not serve the plugin's admin API (keyward.v1.KmsAdmin): it is \
             another socket (the KMS socket, --socket, perhaps)",
        )
        .hint(
            "give the socket `kms serve --admin-socket` names (`keyward dev`: DATA/kms-admin.sock)",
        );
    }
    let kind = match Reason::of(&s) {
        Some(Reason::BadRequest | Reason::Invalid) => "invalid argument",
        Some(Reason::NotFound) => "not found",
        Some(Reason::Conflict) => "refused",
        Some(Reason::ServiceUnavailable) => "unavailable",
        Some(_) => "error",
        None => match s.code() {
            Code::InvalidArgument => "invalid argument",
            Code::NotFound => "not found",
            Code::FailedPrecondition => "refused",
            Code::Unavailable => "unavailable",
            _ => "error",
        },
    };
    CliError::new(format!("{kind}: {}", s.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status the client's transport made (it has a source and no reason) is not printed as
    /// an error from the server.
    #[test]
    fn transport_failures_are_not_errors_from_the_server() {
        let s = Status::from_error(Box::new(std::io::Error::from_raw_os_error(104)));
        let e = server_error_when(s, "error when creating \"m.yaml\": ");
        assert!(!e.plain);
        assert_eq!(
            e.message,
            "error when creating \"m.yaml\": Unable to connect to the server: Connection reset by peer (os error 104)"
        );
    }

    /// A cause is added when it says something new, and not when its words are already there.
    #[test]
    fn causes_are_added_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error, &'static str);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.1)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let missing = || std::io::Error::from_raw_os_error(2);
        assert_eq!(
            with_causes(&Outer(missing(), "transport error")),
            "transport error: No such file or directory (os error 2)"
        );
        assert_eq!(
            with_causes(&Outer(
                missing(),
                "cannot connect: No such file or directory (os error 2)"
            )),
            "cannot connect: No such file or directory (os error 2)"
        );
    }

    /// What the user sees for each reason a store server sends, and for each code when it
    /// sends none.
    #[test]
    fn store_errors_by_reason_then_by_code() {
        let shown = |s: Status| {
            let e = server_error(s);
            assert!(e.plain);
            e.message
        };
        for (reason, want) in [
            (Reason::Invalid, "The m"),
            (Reason::BadRequest, "Error from server (BadRequest): m"),
            (Reason::NotFound, "Error from server (NotFound): m"),
            (
                Reason::AlreadyExists,
                "Error from server (AlreadyExists): m",
            ),
            (Reason::Conflict, "Error from server (Conflict): m"),
            (Reason::Expired, "Error from server (Expired): m"),
            (Reason::Unauthorized, "Error from server (Unauthorized): m"),
            (Reason::Forbidden, "Error from server (Forbidden): m"),
            (Reason::Timeout, "Error from server (Timeout): m"),
            (
                Reason::ServiceUnavailable,
                "Error from server (ServiceUnavailable): m",
            ),
            (
                Reason::InternalError,
                "Error from server (InternalError): m",
            ),
        ] {
            // The reason decides, whatever the code.
            assert_eq!(shown(reason.status(Code::Unknown, "m")), want, "{reason}");
        }
        for (code, want) in [
            (Code::InvalidArgument, "BadRequest"),
            (Code::NotFound, "NotFound"),
            (Code::AlreadyExists, "AlreadyExists"),
            (Code::Aborted, "Conflict"),
            (Code::OutOfRange, "Expired"),
            (Code::Unavailable, "ServiceUnavailable"),
            (Code::Unauthenticated, "Unauthorized"),
            (Code::PermissionDenied, "Forbidden"),
            (Code::DeadlineExceeded, "Timeout"),
            (Code::FailedPrecondition, "InternalError"),
            (Code::Internal, "InternalError"),
        ] {
            assert_eq!(
                shown(Status::new(code, "Secret \"x\" is invalid")),
                format!("Error from server ({want}): Secret \"x\" is invalid"),
                "{code:?}: no reason, so not told apart by the message"
            );
        }
    }

    #[test]
    fn admin_errors_by_reason_then_by_code() {
        let shown = |s: Status| {
            let e = admin_error(s);
            assert!(!e.plain);
            e.message
        };
        for (reason, want) in [
            (Reason::BadRequest, "invalid argument: m"),
            (Reason::Invalid, "invalid argument: m"),
            (Reason::NotFound, "not found: m"),
            (Reason::Conflict, "refused: m"),
            (Reason::ServiceUnavailable, "unavailable: m"),
            (Reason::InternalError, "error: m"),
        ] {
            assert_eq!(shown(reason.status(Code::Unknown, "m")), want, "{reason}");
        }
        for (code, want) in [
            (Code::InvalidArgument, "invalid argument: m"),
            (Code::NotFound, "not found: m"),
            (Code::FailedPrecondition, "refused: m"),
            (Code::Unavailable, "unavailable: m"),
            (Code::Internal, "error: m"),
        ] {
            assert_eq!(shown(Status::new(code, "m")), want, "{code:?}");
        }
    }
}
