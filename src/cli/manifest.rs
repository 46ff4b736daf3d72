//! The manifest codec the commands print with; it lives in [`crate::manifest`].

pub(super) use crate::manifest::to_json;
