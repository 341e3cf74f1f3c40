//! Ricochet's controller API as a library: the data types it exchanges ([`types`],
//! [`error`], the configuration [`diff`] an apply answers with, the object [`kind`]s of
//! its URLs) and a blocking [`client`] whose errors read well in a terminal.
//!
//! The controller serves these types; the service engines (`ricochet-daemon`) and the
//! CLI talk to it through this crate, without depending on the controller. With the
//! `openapi` feature the types derive `utoipa::ToSchema` for the controller's OpenAPI
//! document.

pub mod client;
pub mod diff;
pub mod error;
pub mod kind;
pub mod text;
pub mod tls;
pub mod types;

pub use error::{ErrorBody, ErrorDetail};

/// The largest message of the API, either way: a request body the controller accepts,
/// and an answer its clients (the CLI, the engines) read. The controller refuses a
/// configuration whose desired-state document (`GET /api/v1/desired`) would exceed it,
/// so that whatever it accepts can reach every engine.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
