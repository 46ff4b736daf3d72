//! Why a call failed, as a machine-readable value carried in the gRPC status beside its code:
//! the metadata entry [`REASON_KEY`] holds one of Kubernetes' `metav1.StatusReason` names
//! ([`Reason`]), so a client decides what to tell its user without reading message text. Both
//! keyward services set it: the store ([`crate::api::to_status`]) and the KMS plugin
//! ([`crate::kms::to_status`]); the CLI reads it. It lives below both services so that neither
//! imports the other.

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

/// The metadata key whose value is the status's [`Reason`].
pub const REASON_KEY: &str = "keyward-reason";

/// Why a call failed: the Kubernetes `metav1.StatusReason` values keyward uses, spelled as
/// Kubernetes spells them ([`Reason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The request is malformed: a field is missing, out of range or unreadable (caller).
    BadRequest,
    /// The object breaks validation rules; the message names every field (caller).
    Invalid,
    /// No such object or key (caller).
    NotFound,
    /// Create of an object that exists (caller).
    AlreadyExists,
    /// The object's current state refuses the call: a resourceVersion or uid precondition, a
    /// key in the wrong state (caller: re-read, or change the state first).
    Conflict,
    /// The requested revision is older than the history kept (caller: relist).
    Expired,
    /// No credentials, or credentials that are not valid (caller).
    Unauthorized,
    /// Credentials that do not allow the call (caller).
    Forbidden,
    /// The call did not finish in time (environment).
    Timeout,
    /// Something the server depends on is down: storage, a KMS plugin, key rotation
    /// (environment).
    ServiceUnavailable,
    /// Anything else; the detail is in the server's log (server).
    InternalError,
    /// The request is larger than a call may carry (caller).
    RequestEntityTooLarge,
}

impl Reason {
    /// Every reason, for tests and clients that list them.
    pub const ALL: [Reason; 12] = [
        Reason::BadRequest,
        Reason::Invalid,
        Reason::NotFound,
        Reason::AlreadyExists,
        Reason::Conflict,
        Reason::Expired,
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::Timeout,
        Reason::ServiceUnavailable,
        Reason::InternalError,
        Reason::RequestEntityTooLarge,
    ];

    /// The Kubernetes spelling, e.g. `NotFound`: the metadata value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Invalid => "Invalid",
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Expired => "Expired",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::Timeout => "Timeout",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::InternalError => "InternalError",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
        }
    }

    /// The HTTP status code Kubernetes answers with for this reason.
    pub const fn http_code(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Expired => 410,
            Reason::Invalid => 422,
            Reason::ServiceUnavailable => 503,
            Reason::Timeout => 504,
            Reason::InternalError => 500,
            Reason::RequestEntityTooLarge => 413,
        }
    }

    /// The reason spelled `s`; `None` for a name keyward does not know.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// A status with `code` and `message` that carries this reason.
    pub fn status(self, code: Code, message: impl Into<String>) -> Status {
        let mut metadata = MetadataMap::new();
        metadata.insert(REASON_KEY, MetadataValue::from_static(self.as_str()));
        Status::with_metadata(code, capped(message.into()), metadata)
    }

    /// The reason `status` carries; `None` when it carries none (a server that does not set it,
    /// or a status from the transport) or one this version does not know.
    pub fn of(status: &Status) -> Option<Reason> {
        let value = status.metadata().get(REASON_KEY)?.to_str().ok()?;
        Reason::parse(value)
    }
}

/// The most of a message a status carries (in the `grpc-message` header): a request naming a
/// Secret by 100 KB made a message that clients' HTTP/2 header limits (16 KiB by default)
/// refused, so the caller saw a broken connection instead of the error.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// `message`, cut at [`MAX_MESSAGE_BYTES`] (on a character boundary) with a note of its size.
fn capped(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let total = message.len();
        let mut end = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str(&format!("... (message of {total} bytes cut)"));
    }
    message
}

/// A malformed request: `InvalidArgument` with [`Reason::BadRequest`].
pub fn bad_request(message: impl Into<String>) -> Status {
    Reason::BadRequest.status(Code::InvalidArgument, message)
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_to_fit_a_header() {
        let long = format!(
            "secrets \"{}é\" not found",
            "a".repeat(MAX_MESSAGE_BYTES - 10)
        );
        let s = Reason::NotFound.status(Code::NotFound, long.clone());
        assert!(
            s.message().len() < MAX_MESSAGE_BYTES + 40,
            "{}",
            s.message().len()
        );
        assert!(s.message().starts_with(&long[..MAX_MESSAGE_BYTES - 1]));
        assert!(s
            .message()
            .ends_with(&format!("... (message of {} bytes cut)", long.len())));
        let short = Reason::NotFound.status(Code::NotFound, "secrets \"a\" not found");
        assert_eq!(short.message(), "secrets \"a\" not found");
    }

    #[test]
    fn every_reason_round_trips_through_a_status() {
        for r in Reason::ALL {
            let s = r.status(Code::Internal, "m");
            assert_eq!(Reason::of(&s), Some(r), "{r}");
            assert_eq!(
                s.metadata().get(REASON_KEY).unwrap().to_str().unwrap(),
                r.as_str()
            );
            assert_eq!((s.code(), s.message()), (Code::Internal, "m"));
            assert_eq!(Reason::parse(&r.to_string()), Some(r));
        }
    }

    #[test]
    fn statuses_without_a_known_reason_have_none() {
        assert_eq!(Reason::of(&Status::not_found("x")), None);
        let mut m = MetadataMap::new();
        m.insert(REASON_KEY, MetadataValue::from_static("Teapot"));
        assert_eq!(
            Reason::of(&Status::with_metadata(Code::Unknown, "x", m)),
            None
        );
    }
}
