//! Ricochet's web console, served by the controller on its own address.
//!
//! - [`assets`]: the pages' HTML, CSS and JavaScript, and the pinned chart library (uPlot),
//!   embedded in the binary and served without a token (they hold no data).
//! - [`live`]: `GET /console/live`, a server-sent-event stream of every virtual service's and
//!   server's status and of per-second rates, behind the API's own token check.
//! - [`rates`]: per-second rates derived from the engines' cumulative counters.
//!
//! Everything else the pages show or change goes through the REST API itself, with the
//! operator's token in the `Authorization` header (ARCHITECTURE.md, "The web console",
//! argues why the token lives in the tab's session storage rather than in a cookie).
//!
//! ```no_run
//! # async fn run() -> Result<(), ricochet_controller::ControllerError> {
//! let options = ricochet_controller::Options::new(
//!     "127.0.0.1:8480".parse().unwrap(),
//!     "/var/lib/ricochet".into(),
//! );
//! let mut controller = ricochet_controller::Controller::bind(options).await?;
//! ricochet_console::attach(&mut controller);
//! controller.run(ricochet_controller::stop_signal()).await
//! # }
//! ```

#![warn(missing_docs)]

pub mod assets;
pub mod live;
pub mod rates;

use std::sync::Arc;

use ricochet_controller::Controller;

/// Where the console's pages are.
pub const CONSOLE_PATH: &str = "/console/";

/// Serves the console beside `controller`'s API: the pages at [`CONSOLE_PATH`] (and a
/// redirect from `/`), the live stream behind the API's token check.
pub fn attach(controller: &mut Controller) {
    tracing::info!(
        "web console on {}://{}{CONSOLE_PATH} (sign in with a token)",
        if controller.tls_fingerprint().is_some() {
            "https"
        } else {
            "http"
        },
        controller.local_addr()
    );
    let live = Arc::new(live::Live::new(controller.state().clone()));
    controller.serve_beside(assets::router(), live::router(live), live::ACCESS);
}
