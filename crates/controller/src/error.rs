//! The API's errors: one JSON shape for every refusal.
//!
//! ```json
//! {"error": "validation_failed",
//!  "message": "the change was refused: 1 problem in the configuration",
//!  "details": [{"path": "virtual_services[\"web-vs\"].pool",
//!               "message": "pool \"web-pol\" does not exist (known pools: web-pool)"}]}
//! ```
//!
//! `error` is a stable machine-readable class, `message` a sentence for a person, and
//! `details` the fields concerned. Paths of validation and reference errors are
//! configuration paths (`pools["web-pool"].servers[0].ip`); paths of body errors are
//! within the request body (`servers[0].ratio`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use ricochet_config::ValidationErrors;

use crate::kind::Kind;

pub use ricochet_api::error::{ErrorBody, ErrorDetail};

/// A refused request: the status code and the body to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
    /// For 401: the `WWW-Authenticate` challenge.
    challenge: Option<&'static str>,
}

impl ApiError {
    /// An error without details.
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.to_owned(),
                message: message.into(),
                details: Vec::new(),
            },
            challenge: None,
        }
    }

    /// Adds a detail.
    pub fn with_detail(mut self, path: impl Into<String>, message: impl Into<String>) -> Self {
        self.body.details.push(ErrorDetail {
            path: path.into(),
            message: message.into(),
        });
        self
    }

    /// 422: the resulting configuration does not validate.
    pub fn validation(errors: ValidationErrors) -> Self {
        let n = errors.len();
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            if n == 1 {
                format!("the change was refused: {}", errors.errors()[0])
            } else {
                format!("the change was refused: {n} problems in the configuration")
            },
        );
        for v in errors {
            e = e.with_detail(v.path, v.message);
        }
        e
    }

    /// 404: no object of `kind` named `name`.
    pub fn object_not_found(kind: Kind, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{kind} {name:?} does not exist"),
        )
        .with_detail(kind.path_of(name), format!("no {kind} has this name"))
    }

    /// 401 with the `WWW-Authenticate: Bearer` challenge. `invalid` distinguishes a wrong
    /// token (`error="invalid_token"`, RFC 6750) from a missing one.
    pub fn unauthorized(message: impl Into<String>, invalid: bool) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.challenge = Some(if invalid {
            r#"Bearer realm="ricochet", error="invalid_token""#
        } else {
            r#"Bearer realm="ricochet""#
        });
        e
    }

    /// 500: the store failed. The cause is logged; the client learns that nothing was
    /// answered as done.
    pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Self {
        tracing::error!("{context}: {cause}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context}: {cause}"),
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status, self.body.error, self.body.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
