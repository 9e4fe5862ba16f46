//! A warning kept for operators.

use std::time::SystemTime;

/// Something that went wrong in a cluster, kept for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Warning {
    /// When it happened.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::report::time"))]
    pub at: SystemTime,
    /// The pool concerned, if one is.
    pub pool: Option<String>,
    /// What happened.
    pub message: String,
}
