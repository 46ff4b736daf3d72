//! [`ResourceVersion`]: `metadata.resourceVersion` and the `resource_version` of requests, as
//! the Kubernetes API carries it (a string), parsed once where it enters.

use std::fmt;

use crate::backend::Revision;
use crate::names::FieldError;

/// A `resourceVersion` as the API carries it: `""`, `"0"` or a positive decimal.
///
/// What each means depends on the request, as in Kubernetes: for a watch, [`Unset`] and
/// [`Any`] both start with the current state (an ADDED event per object) and [`At`] replays the
/// changes after that revision; for an update or a delete precondition only [`Unset`] (no
/// condition) and [`At`] (the stored object must be at exactly that revision) are allowed, see
/// [`ResourceVersion::exact`].
///
/// [`Unset`]: ResourceVersion::Unset
/// [`Any`]: ResourceVersion::Any
/// [`At`]: ResourceVersion::At
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceVersion {
    /// `""`: not given.
    Unset,
    /// `"0"`: any version.
    Any,
    /// A revision of the store (a positive decimal).
    At(Revision),
}

impl ResourceVersion {
    /// The field errors name by default.
    pub const FIELD: &'static str = "metadata.resourceVersion";

    /// Parses `s`; an error names `field` (e.g. `metadata.resourceVersion`). A sign, spaces,
    /// an exponent, or a number that does not fit a revision are errors.
    pub fn parse(field: &str, s: &str) -> Result<ResourceVersion, FieldError> {
        match s {
            "" => Ok(ResourceVersion::Unset),
            "0" => Ok(ResourceVersion::Any),
            s => s
                .parse::<Revision>()
                .map(ResourceVersion::At)
                .map_err(|_| not_positive(field, s)),
        }
    }

    /// The revision an update or delete must find (`None`: no condition). `"0"` is refused: a
    /// precondition names one version.
    pub fn exact(self, field: &str) -> Result<Option<Revision>, FieldError> {
        match self {
            ResourceVersion::Unset => Ok(None),
            ResourceVersion::Any => Err(not_positive(field, "0")),
            ResourceVersion::At(r) => Ok(Some(r)),
        }
    }

    /// The revision, if it names one.
    pub fn revision(self) -> Option<Revision> {
        match self {
            ResourceVersion::At(r) => Some(r),
            ResourceVersion::Unset | ResourceVersion::Any => None,
        }
    }
}

fn not_positive(field: &str, s: &str) -> FieldError {
    FieldError::new(
        field,
        format!("Invalid value: {s:?}: must be a positive integer"),
    )
}

impl From<Revision> for ResourceVersion {
    fn from(r: Revision) -> ResourceVersion {
        ResourceVersion::At(r)
    }
}

impl TryFrom<&str> for ResourceVersion {
    type Error = FieldError;

    /// [`ResourceVersion::parse`] naming `metadata.resourceVersion`.
    fn try_from(s: &str) -> Result<ResourceVersion, FieldError> {
        ResourceVersion::parse(Self::FIELD, s)
    }
}

impl TryFrom<String> for ResourceVersion {
    type Error = FieldError;

    /// [`ResourceVersion::parse`] naming `metadata.resourceVersion`.
    fn try_from(s: String) -> Result<ResourceVersion, FieldError> {
        ResourceVersion::parse(Self::FIELD, &s)
    }
}

impl fmt::Display for ResourceVersion {
    /// The API's string: `""`, `"0"` or the revision.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceVersion::Unset => Ok(()),
            ResourceVersion::Any => f.write_str("0"),
            ResourceVersion::At(r) => r.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_api_strings() {
        let at = |r| ResourceVersion::At(Revision::new(r).unwrap());
        for (s, want) in [
            ("", ResourceVersion::Unset),
            ("0", ResourceVersion::Any),
            ("1", at(1)),
            ("42", at(42)),
            // strconv.ParseUint, which kube-apiserver uses, accepts leading zeros.
            ("007", at(7)),
            ("9223372036854775807", at(i64::MAX)),
        ] {
            let rv = ResourceVersion::try_from(s).unwrap();
            assert_eq!(rv, want, "{s:?}");
        }
        for bad in [
            "-1",
            "1e3",
            " 1",
            "1 ",
            "+1",
            "00",
            "abc",
            "1.0",
            "9223372036854775808",
            "18446744073709551616",
        ] {
            let e = ResourceVersion::parse("resource_version", bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("resource_version: Invalid value: {bad:?}: must be a positive integer")
            );
        }
        assert_eq!(
            ResourceVersion::try_from("x".to_owned()).unwrap_err().field,
            "metadata.resourceVersion"
        );
    }

    #[test]
    fn preconditions_name_one_version_and_strings_round_trip() {
        let r = Revision::new(5).unwrap();
        assert_eq!(ResourceVersion::Unset.exact("f"), Ok(None));
        assert_eq!(ResourceVersion::At(r).exact("f"), Ok(Some(r)));
        assert_eq!(
            ResourceVersion::Any.exact("f").unwrap_err().to_string(),
            "f: Invalid value: \"0\": must be a positive integer"
        );
        assert_eq!(ResourceVersion::Any.revision(), None);
        assert_eq!(ResourceVersion::from(r).revision(), Some(r));
        for s in ["", "0", "5"] {
            assert_eq!(ResourceVersion::try_from(s).unwrap().to_string(), s);
        }
    }
}
