//! Ricochet's controller API as a library: the data types it exchanges and a blocking
//! client whose errors read well in a terminal.
//!
//! The service engines (`ricochet-daemon`) and the CLI talk to the controller through
//! this crate only.

pub mod client;

pub use ricochet_controller::error::{ErrorBody, ErrorDetail};
pub use ricochet_controller::types;
