//! One check of one server: the probe on the check's path and, for the VIP path, the
//! diagnosis that tells a dead server from a server the VIP path does not reach.

use std::future::Future;
use std::net::SocketAddr;

use crate::outcome::{Failure, FailureKind};
use crate::probe::{probe, Destination};
use crate::spec::{Check, CheckPath};

/// Runs checks. [`NetProber`] sends real probes; tests of the scheduler's timing give it
/// scripted ones.
pub trait Prober: Send + Sync + 'static {
    /// Runs `check` once, within its monitor's timeout.
    fn check(&self, check: &Check) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// The real probes, from the calling thread's network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetProber;

impl Prober for NetProber {
    fn check(&self, check: &Check) -> impl Future<Output = Result<(), Failure>> + Send {
        run_check(check)
    }
}

/// Runs one check.
///
/// Through the VIP path, the server's own address is probed at the same time (same
/// probe, same timeout, so the check still ends within the monitor's timeout): when the
/// VIP path fails and the own address answers, the server is down with
/// [`FailureKind::DsrPathBroken`] and a reason saying so; when both fail, the reason is
/// the own address's failure (the server itself is down).
pub async fn run_check(check: &Check) -> Result<(), Failure> {
    let monitor = &check.monitor;
    let server = check.key.server;
    match check.path {
        CheckPath::Direct => {
            probe(
                &monitor.probe,
                Destination::direct(server),
                monitor.timeout,
                false,
            )
            .await
        }
        CheckPath::Vip { vip, mark } => {
            let through_vip = Destination {
                addr: vip,
                mark: Some(mark),
                host: vip,
            };
            let (via_vip, on_own_address) = tokio::join!(
                probe(&monitor.probe, through_vip, monitor.timeout, true),
                probe(
                    &monitor.probe,
                    Destination::direct(server),
                    monitor.timeout,
                    false
                ),
            );
            match (via_vip, on_own_address) {
                (Ok(()), _) => Ok(()),
                (Err(vip_failure), Ok(())) => {
                    let vip_at = match monitor.probe.port() {
                        Some(port) => SocketAddr::new(vip, port).to_string(),
                        None => vip.to_string(),
                    };
                    Err(Failure::new(
                        FailureKind::DsrPathBroken,
                        format!(
                            "answers on its own address {server} but not through the VIP path \
                             ({vip_at} encapsulated to {server}): VIP missing on lo or no \
                             decapsulation; through the VIP: {vip_failure}"
                        ),
                    ))
                }
                (Err(_), Err(own)) => Err(own),
            }
        }
    }
}
