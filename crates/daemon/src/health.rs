//! Health monitoring in the engine: the monitors of the pools it runs (crates/health),
//! and what their verdicts do to the data plane.
//!
//! The daemon's loop is synchronous; the checks run on a small tokio runtime of their own
//! (one worker: a check is almost all waiting). On every configuration change the checks
//! are planned again and the scheduler restarted, keeping the states of the checks that
//! did not change. Each turn of the daemon's loop collects the transitions (already
//! logged by the scheduler with their reason) and the set of servers that are down; when
//! that set changes the daemon re-applies its configuration without them
//! ([`without_down_servers`]): a down server leaves its pool's Maglev table, its
//! flows move to the servers left, and it rejoins when it is up again.
//!
//! Monitors with `dsr_path: true` check through the VIP path: the DSR probe encapsulator
//! (`ricochet_dsr_probe`, TC egress) is attached to the engine's interface while such a
//! monitor runs, and each server gets a socket mark that sends its checks encapsulated to
//! it. If the encapsulator cannot be attached (a kernel older than 6.6, no TCX), those
//! monitors check the server's own address and the error is logged: the engine never
//! takes servers out because of its own limits.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::SystemTime;

use ricochet_api::types::{HealthState, ServerHealth};
use ricochet_config::{Config, Desired};
use ricochet_health::{
    plan_checks, Check, DsrPath, Event, Health, NetProber, Scheduler, SchedulerConfig, ServerStatus,
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Pool servers that health monitoring marked down, by pool name and address.
///
/// This is where server health feeds into the data plane: the engine applies the
/// desired state minus these servers ([`without_down_servers`]), and re-applies when the
/// set changes ([`crate::Runner::health_turn`]).
pub type DownServers = BTreeSet<(String, IpAddr)>;

/// What the data plane runs: `desired` without the servers marked down. A down server
/// leaves its pool entirely — its slot is freed, so its flows re-hash to the servers
/// left — unlike a disabled one, which drains (keeps its established flows).
pub fn without_down_servers(desired: &Desired, down: &DownServers) -> Desired {
    if down.is_empty() {
        return desired.clone();
    }
    let mut effective = desired.clone();
    for pool in &mut effective.pools {
        pool.servers
            .retain(|s| !down.contains(&(pool.name.clone(), s.ip)));
    }
    effective
}

/// The engine's monitors.
pub struct Monitoring {
    runtime: tokio::runtime::Runtime,
    scheduler: Option<Scheduler>,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    interface: String,
    dsr: Option<DsrPath>,
    /// The configuration the checks were planned from.
    planned_from: Option<Config>,
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Monitoring {
    /// No monitors yet; `interface` is where the DSR probe encapsulator goes.
    pub fn new(interface: &str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("health-checks")
            .enable_all()
            .build()?;
        let (events_tx, events) = mpsc::unbounded_channel();
        Ok(Self {
            runtime,
            scheduler: None,
            events_tx,
            events,
            interface: interface.to_owned(),
            dsr: None,
            planned_from: None,
        })
    }

    /// Runs the monitors `config` asks for (it was applied); checks that did not change
    /// keep their states.
    pub fn follow(&mut self, config: &Config) {
        if self.planned_from.as_ref() == Some(config) {
            return;
        }
        self.planned_from = Some(config.clone());
        let planned = match plan_checks(config) {
            Ok(p) => p,
            Err(e) => {
                // Validation makes this unreachable for applied configurations; keep the
                // monitors running rather than stop checking.
                error!("health monitors not updated: {e}");
                return;
            }
        };
        let wants_vip_path = planned.iter().any(|p| p.dsr_path && p.vip.is_some());
        if wants_vip_path && self.dsr.is_none() {
            match DsrPath::attach(&self.interface) {
                Ok(dsr) => {
                    info!(interface = %self.interface, "DSR probe encapsulator attached: monitors with dsr_path check through the VIP path");
                    self.dsr = Some(dsr);
                }
                Err(e) => error!(
                    "monitors with dsr_path: true check the servers' own addresses instead: {e}"
                ),
            }
        } else if !wants_vip_path && self.dsr.take().is_some() {
            info!(interface = %self.interface, "no monitor checks through the VIP path any more: DSR probe encapsulator detached");
        }
        if let Some(dsr) = &self.dsr {
            // Give back the marks of servers no check reaches through the VIP path any more,
            // so that a long-lived engine never runs out of them.
            let through_vip: BTreeSet<IpAddr> = planned
                .iter()
                .filter(|p| p.dsr_path && p.vip.is_some())
                .map(|p| p.key.server)
                .collect();
            if let Err(e) = dsr.retain(&through_vip) {
                warn!("releasing DSR probe marks: {e:#}");
            }
        }
        let checks: Vec<Check> = planned
            .iter()
            .map(|p| match (&self.dsr, p.dsr_path && p.vip.is_some()) {
                (Some(dsr), true) => match dsr.register(p.key.server) {
                    Ok(mark) => p.through_vip(mark),
                    Err(e) => {
                        error!("{}: checking the server's own address instead: {e}", p.key);
                        p.direct()
                    }
                },
                _ => p.direct(),
            })
            .collect();
        let count = checks.len();
        let _guard = self.runtime.enter();
        let config = SchedulerConfig::default();
        let tx = self.events_tx.clone();
        self.scheduler = Some(match self.scheduler.take() {
            Some(old) => old.restart(checks, config, NetProber, tx),
            None => Scheduler::start(checks, config, NetProber, tx),
        });
        info!(checks = count, "health monitors running");
    }

    /// Collects the transitions since the last call; whether any server changed.
    pub fn drain(&mut self) -> bool {
        let mut changed = false;
        while let Ok(event) = self.events.try_recv() {
            if let Event::Server { .. } = event {
                changed = true;
            }
        }
        changed
    }

    /// The servers down now.
    pub fn down(&self) -> DownServers {
        self.scheduler
            .as_ref()
            .map(|s| {
                s.servers()
                    .into_iter()
                    .filter(|s| s.health == Health::Down)
                    .map(|s| (s.pool, s.server))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The health of every enabled server of `desired`'s pools: monitored ones from their
    /// monitors, unmonitored ones up ("no health monitor", Avi's rule).
    pub fn report(&self, desired: &Desired) -> Vec<ServerHealth> {
        let states = self
            .scheduler
            .as_ref()
            .map(|s| s.servers())
            .unwrap_or_default();
        // Called every second or two (state file, report): a lookup, not a scan per server.
        let states: HashMap<(&str, IpAddr), &ServerStatus> = states
            .iter()
            .map(|s| ((s.pool.as_str(), s.server), s))
            .collect();
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for pool in &desired.pools {
            for server in pool.servers.iter().filter(|s| s.enabled) {
                if !seen.insert((pool.name.clone(), server.ip)) {
                    continue;
                }
                out.push(match states.get(&(pool.name.as_str(), server.ip)) {
                    Some(s) => ServerHealth {
                        pool: pool.name.clone(),
                        ip: server.ip,
                        state: match s.health {
                            Health::Up => HealthState::Up,
                            Health::Down => HealthState::Down,
                            Health::Unknown => HealthState::Unknown,
                        },
                        reason: Some(s.reason.clone()),
                        since: s.since.map(rfc3339),
                    },
                    None => ServerHealth {
                        pool: pool.name.clone(),
                        ip: server.ip,
                        state: HealthState::Up,
                        reason: Some("no health monitor".to_owned()),
                        since: None,
                    },
                });
            }
        }
        out
    }
}

/// Logs what a change of the down set does to the data plane, with the time: servers
/// leaving and rejoining their pools' Maglev tables, and pools left with no server.
pub fn log_down_change(
    before: &DownServers,
    after: &DownServers,
    desired: &Desired,
    monitoring: &Monitoring,
) {
    let now = rfc3339(SystemTime::now());
    let reasons = monitoring.report(desired);
    let reason = |pool: &str, ip: IpAddr| {
        reasons
            .iter()
            .find(|h| h.pool == pool && h.ip == ip)
            .and_then(|h| h.reason.clone())
            .unwrap_or_default()
    };
    for (pool, ip) in after.difference(before) {
        warn!(%pool, server = %ip, at = %now, reason = %reason(pool, *ip), "server down: it leaves the pool's Maglev table, its flows move to the servers left");
    }
    for (pool, ip) in before.difference(after) {
        info!(%pool, server = %ip, at = %now, reason = %reason(pool, *ip), "server up again (or no longer checked): it rejoins the pool's Maglev table");
    }
    for pool in &desired.pools {
        let enabled: Vec<IpAddr> = pool
            .servers
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.ip)
            .collect();
        let all_down = |set: &DownServers| {
            !enabled.is_empty()
                && enabled
                    .iter()
                    .all(|ip| set.contains(&(pool.name.clone(), *ip)))
        };
        if all_down(after) && !all_down(before) {
            let services: Vec<&str> = desired
                .services
                .iter()
                .filter(|s| s.pool == pool.name)
                .map(|s| s.name.as_str())
                .collect();
            error!(pool = %pool.name, at = %now, "every server of the pool is down: virtual service(s) {} down; their new flows are dropped (counted as drop_no_server)", services.join(", "));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_servers_leave_their_pool_only() {
        let config =
            Config::from_yaml_str(include_str!("../../config/examples/seed.yaml")).unwrap();
        let desired = config.compile().unwrap();
        assert_eq!(without_down_servers(&desired, &DownServers::new()), desired);
        let web01: IpAddr = "192.168.33.10".parse().unwrap();
        let down = DownServers::from([("web-pool".to_owned(), web01)]);
        let effective = without_down_servers(&desired, &down);
        let ips = |d: &Desired, pool: &str| -> Vec<IpAddr> {
            d.pool(pool).unwrap().servers.iter().map(|s| s.ip).collect()
        };
        assert_eq!(
            ips(&effective, "web-pool"),
            ["192.168.34.10".parse::<IpAddr>().unwrap()]
        );
        // The same server in another pool is another monitor's business.
        assert_eq!(ips(&effective, "dns-pool"), ips(&desired, "dns-pool"));
        assert_eq!(effective.services, desired.services);
    }
}
