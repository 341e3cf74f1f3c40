//! What the controller knows of live service engines: when each was last seen, whether it
//! waits in a desired-state poll now, and its last report. Registrations are in the
//! store; this is memory only, rebuilt as engines poll and report after a restart.
//!
//! Every change of an engine's connection (connected / disconnected), of its reported
//! state (starting / running / degraded / failed) and of a server's health as it reports
//! it becomes an event; the functions here compute those transitions under a lock and
//! return the events for the caller to record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::store::{now, EngineRecord, NewEvent};
use crate::types::{
    BgpReport, Connection, EngineReport, HealthState, ReceivedReport, ServerHealth, ServiceEngine,
};

#[derive(Debug, Default)]
struct Live {
    /// When last seen, monotonic and as a time of day.
    last_seen: Option<(Instant, String)>,
    /// Desired-state polls waiting now: an engine waiting in one is connected.
    polls: usize,
    connected: bool,
    /// Shared, so that readers clone it outside the lock.
    report: Option<Arc<ReceivedReport>>,
}

/// Live state of every engine heard from since the controller started.
#[derive(Debug)]
pub struct Engines {
    live: Mutex<HashMap<String, Live>>,
    /// Unheard for longer than this, an engine is disconnected.
    timeout: Duration,
}

fn subject(name: &str) -> String {
    format!("service-engines/{name}")
}

impl Engines {
    /// No engine seen yet.
    pub fn new(timeout: Duration) -> Self {
        Self {
            live: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Live>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `name` seen; returns the event if it was not connected.
    pub fn seen(&self, name: &str, how: &str) -> Option<NewEvent> {
        let mut live = self.lock();
        let entry = live.entry(name.to_owned()).or_default();
        entry.last_seen = Some((Instant::now(), now()));
        if entry.connected {
            return None;
        }
        entry.connected = true;
        Some(NewEvent {
            subject: subject(name),
            state: Connection::Connected.as_str().into(),
            previous: Some(Connection::Disconnected.as_str().into()),
            reason: format!("the engine {how}"),
        })
    }

    /// A desired-state poll of `name` starts: it is connected until the guard drops
    /// (plus the timeout). Returns the guard and the event if it was not connected.
    pub fn poll(self: &Arc<Self>, name: &str) -> (PollGuard, Option<NewEvent>) {
        let event = self.seen(name, "polls for the desired configuration");
        self.lock().entry(name.to_owned()).or_default().polls += 1;
        (
            PollGuard {
                engines: Arc::clone(self),
                name: name.to_owned(),
            },
            event,
        )
    }

    /// Stores a report; returns the events of what changed since the previous one.
    ///
    /// Linear in the report's servers (the previous report is indexed by pool and
    /// address), and the lock is held only to take and to put the reports: the comparison
    /// runs outside it, so that a large report never holds up the readers of other
    /// engines' state. Call it off the async workers.
    pub fn report(&self, name: &str, report: EngineReport) -> Vec<NewEvent> {
        let connected = self.seen(name, "reports");
        let report = Arc::new(ReceivedReport {
            received_at: now(),
            report,
        });
        loop {
            let previous = self
                .lock()
                .get(name)
                .and_then(|e| e.report.as_ref().map(Arc::clone));
            let mut events: Vec<NewEvent> = connected.clone().into_iter().collect();
            events.extend(report_events(
                name,
                previous.as_ref().map(|p| &p.report),
                &report.report,
            ));
            let mut live = self.lock();
            let entry = live.entry(name.to_owned()).or_default();
            // Another report of this engine came in meanwhile: compare with that one.
            let unchanged = match (&entry.report, &previous) {
                (Some(now), Some(before)) => Arc::ptr_eq(now, before),
                (None, None) => true,
                _ => false,
            };
            if unchanged {
                entry.report = Some(report);
                return events;
            }
        }
    }

    /// Engines unheard for longer than the timeout and not polling become disconnected;
    /// returns their events.
    pub fn sweep(&self) -> Vec<NewEvent> {
        let mut live = self.lock();
        let mut events = Vec::new();
        for (name, entry) in live.iter_mut() {
            let stale = entry
                .last_seen
                .as_ref()
                .is_none_or(|(at, _)| at.elapsed() > self.timeout);
            if entry.connected && entry.polls == 0 && stale {
                entry.connected = false;
                events.push(NewEvent {
                    subject: subject(name),
                    state: Connection::Disconnected.as_str().into(),
                    previous: Some(Connection::Connected.as_str().into()),
                    reason: format!(
                        "no registration, report or poll for more than {} s",
                        self.timeout.as_secs_f64()
                    ),
                });
            }
        }
        events
    }

    /// The server health reported by each connected engine: (engine, server).
    pub fn server_health(&self) -> Vec<(String, ServerHealth)> {
        let reports: Vec<(String, Arc<ReceivedReport>)> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.connected)
            .filter_map(|(name, e)| e.report.as_ref().map(|r| (name.clone(), Arc::clone(r))))
            .collect();
        let mut all: Vec<(String, ServerHealth)> = reports
            .iter()
            .flat_map(|(name, r)| r.report.servers.iter().map(|s| (name.clone(), s.clone())))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The BGP announcement of every connected engine that reports one, by name.
    pub fn bgp_reports(&self) -> Vec<(String, BgpReport)> {
        let mut all: Vec<(String, BgpReport)> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.connected)
            .filter_map(|(name, e)| {
                e.report
                    .as_ref()
                    .and_then(|r| r.report.bgp.clone())
                    .map(|b| (name.clone(), b))
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Forgets an engine (after it is unregistered).
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// The API's view of a registered engine.
    pub fn view(&self, record: EngineRecord) -> ServiceEngine {
        let (connected, last_seen, report) = {
            let live = self.lock();
            let entry = live.get(&record.name);
            (
                entry.is_some_and(|e| e.connected),
                entry.and_then(|e| e.last_seen.as_ref().map(|(_, t)| t.clone())),
                entry.and_then(|e| e.report.as_ref().map(Arc::clone)),
            )
        };
        ServiceEngine {
            connection: if connected {
                Connection::Connected
            } else {
                Connection::Disconnected
            },
            last_seen,
            report: report.map(|r| (*r).clone()),
            name: record.name,
            addresses: record.addresses,
            version: record.version,
            registered_at: record.registered_at,
            revision: record.revision,
        }
    }
}

/// The events of a new report against the previous one: the engine's state, and each
/// server whose health changed (a server not in the previous report was `unknown`).
fn report_events(
    name: &str,
    previous: Option<&EngineReport>,
    report: &EngineReport,
) -> Vec<NewEvent> {
    let mut events = Vec::new();
    let old_state = previous.map(|p| p.state);
    if old_state != Some(report.state) {
        let running = match report.revision {
            Some(r) => format!("runs configuration revision {r}"),
            None => "runs no configuration yet".to_owned(),
        };
        events.push(NewEvent {
            subject: subject(name),
            state: report.state.as_str().into(),
            previous: old_state.map(|s| s.as_str().into()),
            reason: match &report.message {
                Some(m) => format!("the engine reports: {m} ({running})"),
                None => format!("the engine reports it {running}"),
            },
        });
    }
    let before: HashMap<(&str, std::net::IpAddr), HealthState> = previous
        .map(|p| {
            p.servers
                .iter()
                .map(|s| ((s.pool.as_str(), s.ip), s.state))
                .collect()
        })
        .unwrap_or_default();
    for server in &report.servers {
        let before = before
            .get(&(server.pool.as_str(), server.ip))
            .copied()
            .unwrap_or(HealthState::Unknown);
        if before != server.state {
            events.push(NewEvent {
                subject: format!(
                    "{}/pools/{}/servers/{}",
                    subject(name),
                    server.pool,
                    server.ip
                ),
                state: server.state.as_str().into(),
                previous: Some(before.as_str().into()),
                reason: match (&server.reason, &server.since) {
                    (Some(reason), Some(since)) => {
                        format!("{reason} (engine {name}, since {since})")
                    }
                    (Some(reason), None) => format!("{reason} (engine {name})"),
                    (None, _) => format!("reported by engine {name}"),
                },
            });
        }
    }
    events.extend(bgp_events(
        name,
        previous.and_then(|p| p.bgp.as_ref()),
        report.bgp.as_ref(),
    ));
    events
}

/// The events of an engine's BGP announcement: each session whose state changed, each VIP
/// announced or withdrawn (with the engine's reason), and the announcement's error.
fn bgp_events(name: &str, before: Option<&BgpReport>, now: Option<&BgpReport>) -> Vec<NewEvent> {
    let mut events = Vec::new();
    let empty = BgpReport {
        group: String::new(),
        daemon: None,
        error: None,
        sessions: Vec::new(),
        vips: Vec::new(),
    };
    let (before_r, now_r) = (before.unwrap_or(&empty), now.unwrap_or(&empty));
    let group = if now_r.group.is_empty() {
        &before_r.group
    } else {
        &now_r.group
    };
    for s in &now_r.sessions {
        let old = before_r.sessions.iter().find(|o| o.peer == s.peer);
        if old.map(|o| o.state) != Some(s.state) {
            events.push(NewEvent {
                subject: format!("{}/bgp/peers/{}", subject(name), s.peer),
                state: s.state.as_str().into(),
                previous: old.map(|o| o.state.as_str().into()),
                reason: format!(
                    "BGP session of engine {name} (service engine group {group}) to {}: {}",
                    s.peer, s.info
                ),
            });
        }
    }
    let state = |announced: bool| if announced { "announced" } else { "withdrawn" };
    for v in &now_r.vips {
        let old = before_r.vips.iter().find(|o| o.vip == v.vip);
        if old.map(|o| o.announced) != Some(v.announced) {
            events.push(NewEvent {
                subject: format!("{}/vips/{}", subject(name), v.vip),
                state: state(v.announced).into(),
                previous: old.map(|o| state(o.announced).into()),
                reason: format!("engine {name}: {}", v.reason),
            });
        }
    }
    // A VIP no longer in the report (its virtual service left the group or was deleted)
    // was withdrawn with it.
    for old in &before_r.vips {
        if old.announced && !now_r.vips.iter().any(|v| v.vip == old.vip) {
            events.push(NewEvent {
                subject: format!("{}/vips/{}", subject(name), old.vip),
                state: "withdrawn".into(),
                previous: Some("announced".into()),
                reason: format!("engine {name}: no virtual service of it runs on this engine"),
            });
        }
    }
    if now_r.error != before_r.error {
        if let Some(e) = &now_r.error {
            events.push(NewEvent {
                subject: format!("{}/bgp", subject(name)),
                state: "error".into(),
                previous: None,
                reason: format!("engine {name}: {e}"),
            });
        } else if before.is_some() && now.is_some() {
            events.push(NewEvent {
                subject: format!("{}/bgp", subject(name)),
                state: "ok".into(),
                previous: Some("error".into()),
                reason: format!("engine {name}: the BGP announcement is configured again"),
            });
        }
    }
    events
}

/// Held while an engine waits in a desired-state poll.
pub struct PollGuard {
    engines: Arc<Engines>,
    name: String,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        let mut live = self.engines.lock();
        if let Some(entry) = live.get_mut(&self.name) {
            entry.polls = entry.polls.saturating_sub(1);
            // The end of a poll is a sign of life too.
            entry.last_seen = Some((Instant::now(), now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EngineCounters, EngineRunState};

    fn report(state: EngineRunState, servers: &[(&str, HealthState)]) -> EngineReport {
        EngineReport {
            revision: Some(3),
            state,
            message: None,
            counters: EngineCounters::default(),
            warnings: Vec::new(),
            bgp: None,
            servers: servers
                .iter()
                .map(|(ip, state)| ServerHealth {
                    pool: "web-pool".into(),
                    ip: ip.parse().unwrap(),
                    state: *state,
                    reason: Some("connection refused".into())
                        .filter(|_| *state == HealthState::Down),
                    since: Some("2025-01-01T00:00:00.000Z".into()),
                })
                .collect(),
        }
    }

    fn states(events: &[NewEvent]) -> Vec<(&str, &str)> {
        events
            .iter()
            .map(|e| (e.subject.as_str(), e.state.as_str()))
            .collect()
    }

    #[test]
    fn reports_yield_events_only_for_changes() {
        let engines = Engines::new(Duration::from_secs(10));
        let up = [("10.0.0.1", HealthState::Up)];
        let first = engines.report("se1", report(EngineRunState::Running, &up));
        assert_eq!(
            states(&first),
            [
                ("service-engines/se1", "connected"),
                ("service-engines/se1", "running"),
                ("service-engines/se1/pools/web-pool/servers/10.0.0.1", "up"),
            ]
        );
        assert!(engines
            .report("se1", report(EngineRunState::Running, &up))
            .is_empty());
        let down = engines.report(
            "se1",
            report(EngineRunState::Running, &[("10.0.0.1", HealthState::Down)]),
        );
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].state, "down");
        assert_eq!(down[0].previous.as_deref(), Some("up"));
        assert_eq!(
            down[0].reason,
            "connection refused (engine se1, since 2025-01-01T00:00:00.000Z)"
        );
    }

    #[test]
    fn silent_engines_disconnect_unless_polling() {
        let engines = Arc::new(Engines::new(Duration::from_millis(20)));
        engines.seen("se1", "registers");
        let (guard, event) = engines.poll("se2");
        assert!(event.is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            states(&engines.sweep()),
            [("service-engines/se1", "disconnected")]
        );
        assert!(engines.sweep().is_empty(), "reported once");
        drop(guard);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            states(&engines.sweep()),
            [("service-engines/se2", "disconnected")]
        );
    }

    #[test]
    fn bgp_changes_are_events_with_the_engines_reason() {
        use crate::types::{BgpSession, BgpSessionState, VipAnnouncement};
        let bgp = |state: BgpSessionState, announced: Option<bool>, error: Option<&str>| {
            let mut r = report(EngineRunState::Running, &[]);
            r.bgp = Some(BgpReport {
                group: "g1".into(),
                daemon: Some("BIRD 2.0.12".into()),
                error: error.map(str::to_owned),
                sessions: vec![BgpSession {
                    peer: "192.168.33.1".parse().unwrap(),
                    state,
                    info: format!("{state:?}"),
                    since: None,
                }],
                vips: announced
                    .map(|announced| VipAnnouncement {
                        vip: "192.168.35.241".parse().unwrap(),
                        announced,
                        reason: if announced {
                            "serving: web-vs (2 of 2 servers up)".into()
                        } else {
                            "no server is up in virtual service web-vs".into()
                        },
                    })
                    .into_iter()
                    .collect(),
            });
            r
        };
        use BgpSessionState::*;
        let first = bgp(Connecting, Some(true), None);
        let e = report_events("se1", None, &first);
        assert!(states(&e).contains(&("service-engines/se1/bgp/peers/192.168.33.1", "connecting")));
        assert!(states(&e).contains(&("service-engines/se1/vips/192.168.35.241", "announced")));
        let up = bgp(Established, Some(true), None);
        assert_eq!(
            states(&report_events("se1", Some(&first), &up)),
            [("service-engines/se1/bgp/peers/192.168.33.1", "established")]
        );
        assert!(report_events("se1", Some(&up), &up).is_empty());
        let down = bgp(Established, Some(false), None);
        let e = report_events("se1", Some(&up), &down);
        assert_eq!(
            states(&e),
            [("service-engines/se1/vips/192.168.35.241", "withdrawn")]
        );
        assert_eq!(
            e[0].reason,
            "engine se1: no server is up in virtual service web-vs"
        );
        let gone = bgp(Established, None, Some("no BGP daemon answers"));
        let e = report_events("se1", Some(&up), &gone);
        assert_eq!(
            states(&e),
            [
                ("service-engines/se1/vips/192.168.35.241", "withdrawn"),
                ("service-engines/se1/bgp", "error")
            ]
        );
    }
}
