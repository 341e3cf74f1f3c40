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
pub mod types;

pub use error::{ErrorBody, ErrorDetail};
