//! The body of the API's error answers: one JSON shape for every refusal.
//!
//! ```json
//! {"error": "validation_failed",
//!  "message": "the change was refused: 1 problem in the configuration",
//!  "details": [{"path": "virtual_services[\"web-vs\"].pool",
//!               "message": "pool \"web-pol\" does not exist (known pools: web-pool)"}]}
//! ```
//!
//! `error` is a stable machine-readable class, `message` a sentence for a person, and
//! `details` the fields concerned.

use serde::{Deserialize, Serialize};

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The class of error, stable for programs: `validation_failed`, `malformed_json`,
    /// `invalid_body`, `invalid_query`, `name_mismatch`, `not_found`, `already_exists`,
    /// `in_use`, `built_in`, `revision_mismatch`, `unauthorized`, `method_not_allowed`,
    /// `unsupported_media_type`, `payload_too_large`, `not_registered`, `internal`.
    pub error: String,
    /// What happened, as a sentence for a person.
    pub message: String,
    /// The fields concerned, if any.
    #[serde(default)]
    pub details: Vec<ErrorDetail>,
}

/// One field concerned by an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Where: a configuration path such as `virtual_services["web-vs"].pool`, or a path
    /// within the request body such as `servers[0].ratio`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}
