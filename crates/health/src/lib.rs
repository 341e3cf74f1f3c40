//! Ricochet's health monitors: Avi's `HealthMonitor` objects run against every pool
//! server, with their interval, timeout, rise and fall.
//!
//! - [`spec`]: monitors resolved from the configuration ([`plan_checks`]), one [`Check`]
//!   per (pool, server, monitor), each on a [`CheckPath`]: the server's own address, or
//!   the VIP path.
//! - [`probe`]: TCP (connect, optional request/response), HTTP (request line and
//!   headers, status classes, body text), UDP (request, expected text, or Avi's "no
//!   ICMP unreachable") and ICMP echo, each bounded by the receive timeout, each failing
//!   with a precise [`Failure`] (`connection refused (connecting to 192.168.33.10:80)`,
//!   `timeout after 2 s (...)`, `HTTP 503 Service Unavailable not in [200-299]`, ...).
//! - [`state`]: the rise/fall state machine per (pool, server, monitor), pure, and
//!   Avi's rule for a server: down if any of its monitors is down.
//! - [`scheduler`]: runs every check at its interval on tokio with bounded concurrency
//!   and sends each transition ([`Event`]) through a channel.
//! - [`dsr`]: DSR-aware checking. A check through the VIP path reaches the server the
//!   way client traffic does, encapsulated, to VIP:port, so a server that answers on its
//!   own address but lacks the VIP on `lo` or decapsulation is marked down with that
//!   reason ([`FailureKind::DsrPathBroken`]).
#![warn(missing_docs)]

pub mod check;
pub mod dsr;
pub mod http;
pub mod outcome;
pub mod probe;
pub mod scheduler;
pub mod spec;
pub mod state;

pub use check::{run_check, NetProber, Prober};
pub use dsr::{DsrError, DsrPath, DEFAULT_MARK_BASE};
pub use outcome::{Failure, FailureKind};
pub use scheduler::{Event, MonitorStatus, Registry, Scheduler, SchedulerConfig, ServerStatus};
pub use spec::{
    plan_checks, Check, CheckKey, CheckPath, Monitor, PlannedCheck, ProbeSpec, SpecError,
};
pub use state::{combine, Health, Initial, MonitorState, Transition};
