//! Where the daemon's configurations come from.
//!
//! - [`file`]: a configuration file, re-read on SIGHUP or when its content changes;
//! - [`controller`]: a controller, followed by long poll; the last configuration applied
//!   from it is kept in the state directory for a restart while it is away.
//!
//! Either way a refused change is logged (and, to a controller, reported) and the
//! running configuration stays.

pub mod controller;
pub mod file;

use std::path::PathBuf;
use std::time::Duration;

pub use controller::ControllerOptions;

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A file, checked every `watch_interval` and on SIGHUP.
    File {
        path: PathBuf,
        watch_interval: Duration,
    },
    /// A controller.
    Controller(ControllerOptions),
}
