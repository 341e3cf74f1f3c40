//! What a controller-following engine tells the controller: the revision that runs, its
//! state (a refused revision makes it degraded), its counters and its servers' health;
//! and the thread that posts it.
//!
//! The *reporter* posts the newest report the daemon left for it (after each apply, and
//! every few seconds with fresh counters); a report the controller did not get is simply
//! superseded by the next one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ricochet_api::client::Client;
use ricochet_api::types::{
    EngineCounters, EngineReport, EngineRunState, ServerCounters, ServiceCounters,
};
use ricochet_engine::status::Status;
use serde_json::Value;
use tracing::warn;

use crate::runner::{DaemonDataplane, Runner};
use crate::source::controller::LinkState;

/// How often a controller-following engine reports its counters.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(2);

/// The report of `runner`, running the controller's revision `running` (if any), with
/// the message of the last refused revision (if the last one was refused).
pub fn engine_report<D: DaemonDataplane>(
    runner: &Runner<D>,
    running: Option<u64>,
    refusal: Option<&str>,
) -> EngineReport {
    let state = match (refusal, running) {
        (Some(_), _) => EngineRunState::Degraded,
        (None, Some(_)) => EngineRunState::Running,
        (None, None) => EngineRunState::Starting,
    };
    let counters = if runner.attached() {
        match runner.engine().status() {
            Ok(status) => counters(status),
            Err(e) => {
                warn!("reading the counters: {e:#}");
                EngineCounters::default()
            }
        }
    } else {
        EngineCounters::default()
    };
    EngineReport {
        revision: running,
        state,
        message: refusal.map(str::to_owned),
        counters,
        servers: runner.monitoring().report(runner.current()),
        warnings: runner.warnings(),
        bgp: runner.bgp_report().cloned(),
    }
}

/// The data plane's counters, in the controller's terms.
pub fn counters(status: Status) -> EngineCounters {
    EngineCounters {
        services: status
            .services
            .iter()
            .map(|s| ServiceCounters {
                name: s.name.clone(),
                packets: s.counters.packets,
                bytes: s.counters.bytes,
                new_flows: s.counters.new_flows,
            })
            .collect(),
        servers: status
            .pools
            .iter()
            .flat_map(|p| {
                p.servers.iter().map(|s| ServerCounters {
                    pool: p.name.clone(),
                    ip: s.ip,
                    packets: s.counters.packets,
                    bytes: s.counters.bytes,
                    new_flows: s.counters.new_flows,
                })
            })
            .collect(),
        reasons: status.reasons.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

#[derive(Default)]
struct ReportSlot {
    next: Mutex<Option<EngineReport>>,
    ready: Condvar,
}

/// The thread posting reports to the controller.
pub struct Reporter {
    slot: Arc<ReportSlot>,
    stop: Arc<AtomicBool>,
}

impl Reporter {
    /// Starts the thread posting `name`'s reports through `client`.
    pub(crate) fn start(client: Arc<Client>, link: Arc<LinkState>, name: &str) -> Reporter {
        let slot = Arc::new(ReportSlot::default());
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/api/v1/service-engines/{name}/report");
        {
            let (slot, stop) = (slot.clone(), stop.clone());
            std::thread::Builder::new()
                .name("controller-report".into())
                .spawn(move || post_reports(&client, &link, &stop, &slot, &path))
                .expect("spawning a thread");
        }
        Reporter { slot, stop }
    }

    /// Leaves `report` for the reporter, replacing one it has not sent yet.
    pub fn report(&self, report: EngineReport) {
        *self.slot.next.lock().expect("report slot") = Some(report);
        self.slot.ready.notify_one();
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        // The thread ends within its wait.
        self.stop.store(true, Ordering::SeqCst);
        self.slot.ready.notify_one();
    }
}

fn post_reports(
    client: &Client,
    link: &LinkState,
    stop: &AtomicBool,
    slot: &ReportSlot,
    path: &str,
) {
    loop {
        let next = {
            let mut guard = slot.next.lock().expect("report slot");
            while guard.is_none() && !stop.load(Ordering::SeqCst) {
                guard = slot
                    .ready
                    .wait_timeout(guard, Duration::from_secs(1))
                    .expect("report slot")
                    .0;
            }
            guard.take()
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(report) = next else { continue };
        let body = serde_json::to_value(&report).expect("reports serialize");
        match client.call::<Value>("POST", path, Some(&body), &[]) {
            Ok(_) => link.answered(),
            // Not registered (yet, or any more): the watcher registers; the next report
            // comes within seconds.
            Err(e) => link.failed("reporting", &e),
        }
    }
}
