//! Runs every check at its monitor's interval, with at most N checks in flight, and
//! reports each change of a monitor's or a server's state through a channel.
//!
//! Why tokio tasks rather than threads: a check spends nearly all its time waiting (for
//! a connect, an answer, the next interval), and an engine may run thousands of them
//! (monitors × servers); one task each costs a few hundred bytes, and timeouts are
//! timers rather than blocked threads. A semaphore bounds how many probes run at once,
//! so a pool of a thousand servers does not open a thousand sockets in the same
//! millisecond. State lives in one [`Registry`] under a mutex held only to record an
//! outcome (never across an await), so the order of events is the order of outcomes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{interval, MissedTickBehavior};

use crate::check::Prober;
use crate::outcome::Failure;
use crate::spec::{Check, CheckKey};
use crate::state::{combine, Health, Initial, MonitorState, Transition};

/// A change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// One monitor on one server changed.
    Monitor {
        /// Pool, server, monitor.
        key: CheckKey,
        /// From, to, why, when.
        transition: Transition,
    },
    /// A server of a pool changed (from its monitors: down if any is down).
    Server {
        /// The pool.
        pool: String,
        /// The server's own address.
        server: IpAddr,
        /// From, to, why, when.
        transition: Transition,
    },
}

/// A monitor's state on one server, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorStatus {
    /// Pool, server, monitor.
    pub key: CheckKey,
    /// Its state.
    pub health: Health,
    /// Why.
    pub reason: String,
    /// Since when (`None`: the initial state).
    pub since: Option<SystemTime>,
}

/// A server's state from its monitors, for status displays and the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    /// The pool.
    pub pool: String,
    /// The server's own address.
    pub server: IpAddr,
    /// Down if any monitor is down.
    pub health: Health,
    /// Why (the reasons of the monitors that are down, or that all are up).
    pub reason: String,
    /// Since when (`None`: the initial state).
    pub since: Option<SystemTime>,
}

/// Every monitor's state, and every server's, updated as outcomes arrive.
#[derive(Debug)]
pub struct Registry {
    monitors: BTreeMap<CheckKey, MonitorState>,
    servers: BTreeMap<(String, IpAddr), (Health, String, Option<SystemTime>)>,
}

impl Registry {
    /// States for `checks`, each starting as `initial`.
    pub fn new<'a>(checks: impl IntoIterator<Item = &'a Check>, initial: Initial) -> Self {
        let mut monitors = BTreeMap::new();
        for check in checks {
            monitors.insert(
                check.key.clone(),
                MonitorState::new(check.monitor.rise, check.monitor.fall, initial),
            );
        }
        let mut registry = Self {
            monitors,
            servers: BTreeMap::new(),
        };
        let servers: BTreeSet<(String, IpAddr)> = registry
            .monitors
            .keys()
            .map(|k| (k.pool.clone(), k.server))
            .collect();
        for server in servers {
            let (health, reason) = registry.combined(&server.0, server.1);
            registry.servers.insert(server, (health, reason, None));
        }
        registry
    }

    /// States for `checks` after a configuration change: a check identical to one of
    /// `previous_checks` (same pool, server, monitor settings and path) keeps its state
    /// from `previous`; others start as `initial`. A server whose combined state changes
    /// by it (a monitor removed or added) changes at `at`; those events are returned.
    pub fn keeping<'a>(
        checks: impl IntoIterator<Item = &'a Check>,
        initial: Initial,
        previous: &Registry,
        previous_checks: &[Check],
        at: SystemTime,
    ) -> (Self, Vec<Event>) {
        let checks: Vec<&Check> = checks.into_iter().collect();
        let mut registry = Self::new(checks.iter().copied(), initial);
        let previous_checks: HashMap<&CheckKey, &Check> =
            previous_checks.iter().map(|c| (&c.key, c)).collect();
        for check in &checks {
            if previous_checks.get(&check.key) == Some(check) {
                if let Some(state) = previous.monitors.get(&check.key) {
                    registry.monitors.insert(check.key.clone(), state.clone());
                }
            }
        }
        let mut events = Vec::new();
        let servers: Vec<(String, IpAddr)> = registry.servers.keys().cloned().collect();
        for server in servers {
            let (health, reason) = registry.combined(&server.0, server.1);
            let entry = match previous.servers.get(&server) {
                Some((old, _, since)) if *old == health => (health, reason, *since),
                Some((old, _, _)) => {
                    events.push(Event::Server {
                        pool: server.0.clone(),
                        server: server.1,
                        transition: Transition {
                            from: *old,
                            to: health,
                            reason: format!("its monitors changed: {reason}"),
                            at,
                        },
                    });
                    (health, reason, Some(at))
                }
                None => (health, reason, None),
            };
            registry.servers.insert(server, entry);
        }
        (registry, events)
    }

    /// Every server's state: (pool, server) → (health, reason, since).
    pub fn servers(
        &self,
    ) -> impl Iterator<Item = (&(String, IpAddr), &(Health, String, Option<SystemTime>))> {
        self.servers.iter()
    }

    /// A server's state from its monitors. Keys sort by pool, server, monitor, so the
    /// server's monitors are one range of the map (outcomes arrive all the time; a scan
    /// of every check would cost the whole registry each).
    fn combined(&self, pool: &str, server: IpAddr) -> (Health, String) {
        let first = CheckKey {
            pool: pool.to_owned(),
            server,
            monitor: String::new(),
        };
        combine(
            self.monitors
                .range(first..)
                .take_while(|(k, _)| k.pool == pool && k.server == server)
                .map(|(k, s)| (k.monitor.as_str(), s)),
        )
    }

    /// Records an outcome completed at `at`; returns the events it caused (the monitor's
    /// transition first, then its server's).
    pub fn record(
        &mut self,
        key: &CheckKey,
        outcome: &Result<(), Failure>,
        at: SystemTime,
    ) -> Vec<Event> {
        let Some(state) = self.monitors.get_mut(key) else {
            return Vec::new();
        };
        let Some(transition) = state.record(outcome, at) else {
            // The server's reason may still name a newer cause; its state cannot change.
            let server = (key.pool.clone(), key.server);
            let (_, reason) = self.combined(&key.pool, key.server);
            if let Some(entry) = self.servers.get_mut(&server) {
                entry.1 = reason;
            }
            return Vec::new();
        };
        let mut events = vec![Event::Monitor {
            key: key.clone(),
            transition,
        }];
        let (health, reason) = self.combined(&key.pool, key.server);
        let entry = self
            .servers
            .entry((key.pool.clone(), key.server))
            .or_insert((Health::Unknown, String::new(), None));
        if entry.0 != health {
            events.push(Event::Server {
                pool: key.pool.clone(),
                server: key.server,
                transition: Transition {
                    from: entry.0,
                    to: health,
                    reason: reason.clone(),
                    at,
                },
            });
            entry.2 = Some(at);
        }
        entry.0 = health;
        entry.1 = reason;
        events
    }

    /// Every monitor's state.
    pub fn monitors(&self) -> Vec<MonitorStatus> {
        self.monitors
            .iter()
            .map(|(key, s)| MonitorStatus {
                key: key.clone(),
                health: s.health(),
                reason: s.reason().to_owned(),
                since: s.since(),
            })
            .collect()
    }

    /// A server's state, reason and since when, if it is checked.
    pub fn server(
        &self,
        pool: &str,
        server: IpAddr,
    ) -> Option<(Health, String, Option<SystemTime>)> {
        self.servers.get(&(pool.to_owned(), server)).cloned()
    }
}

/// Scheduler settings.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Most checks in flight at once.
    pub max_concurrent: usize,
    /// The state every monitor starts in.
    pub initial: Initial,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            initial: Initial::Unknown,
        }
    }
}

/// Running checks; dropping it stops them (their tasks are aborted).
#[derive(Debug)]
pub struct Scheduler {
    registry: Arc<Mutex<Registry>>,
    checks: Vec<Check>,
    _tasks: JoinSet<()>,
}

impl Scheduler {
    /// Starts `checks` on the current tokio runtime: each runs at once, then every
    /// interval (a slow check delays its next one rather than overlapping it). Every
    /// transition is sent to `events`.
    pub fn start<P: Prober>(
        checks: Vec<Check>,
        config: SchedulerConfig,
        prober: P,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let registry = Registry::new(&checks, config.initial);
        Self::spawn(checks, registry, config, prober, events)
    }

    /// Replaces `self` (a configuration changed): its tasks stop, `checks` start; the
    /// checks that did not change keep their states (rise/fall counts, since when), so a
    /// configuration change elsewhere does not put healthy servers back to unknown. A
    /// server whose state changes because its monitors changed is reported at once.
    pub fn restart<P: Prober>(
        self,
        checks: Vec<Check>,
        config: SchedulerConfig,
        prober: P,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let previous_checks = self.checks.clone();
        let previous = Arc::clone(&self.registry);
        drop(self); // aborts the old tasks before the new ones start
        let (registry, changes) = Registry::keeping(
            &checks,
            config.initial,
            &previous.lock().unwrap_or_else(|e| e.into_inner()),
            &previous_checks,
            SystemTime::now(),
        );
        for event in changes {
            log(&event);
            let _ = events.send(event);
        }
        Self::spawn(checks, registry, config, prober, events)
    }

    fn spawn<P: Prober>(
        checks: Vec<Check>,
        registry: Registry,
        config: SchedulerConfig,
        prober: P,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        let registry = Arc::new(Mutex::new(registry));
        let permits = Arc::new(Semaphore::new(config.max_concurrent.max(1)));
        let prober = Arc::new(prober);
        let mut tasks = JoinSet::new();
        for check in checks.clone() {
            let (registry, permits, prober, events) = (
                registry.clone(),
                permits.clone(),
                prober.clone(),
                events.clone(),
            );
            tasks.spawn(async move {
                let mut ticks = interval(check.monitor.interval);
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Ok(permit) = permits.acquire().await else {
                        return;
                    };
                    let outcome = prober.check(&check).await;
                    drop(permit);
                    let at = SystemTime::now();
                    let changes = registry
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&check.key, &outcome, at);
                    for event in changes {
                        log(&event);
                        // A closed receiver only means nobody listens any more.
                        let _ = events.send(event);
                    }
                }
            });
        }
        Self {
            registry,
            checks,
            _tasks: tasks,
        }
    }

    /// The checks it runs.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// Every server's state.
    pub fn servers(&self) -> Vec<ServerStatus> {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .servers()
            .map(|((pool, server), (health, reason, since))| ServerStatus {
                pool: pool.clone(),
                server: *server,
                health: *health,
                reason: reason.clone(),
                since: *since,
            })
            .collect()
    }

    /// Every monitor's state now.
    pub fn monitors(&self) -> Vec<MonitorStatus> {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .monitors()
    }

    /// A server's state, reason and since when, if it is checked.
    pub fn server(
        &self,
        pool: &str,
        server: IpAddr,
    ) -> Option<(Health, String, Option<SystemTime>)> {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .server(pool, server)
    }
}

fn log(event: &Event) {
    match event {
        Event::Monitor { key, transition } => tracing::info!(
            pool = %key.pool, server = %key.server, monitor = %key.monitor,
            from = %transition.from, to = %transition.to, reason = %transition.reason,
            "health monitor changed state"
        ),
        Event::Server {
            pool,
            server,
            transition,
        } => tracing::warn!(
            %pool, %server, from = %transition.from, to = %transition.to,
            reason = %transition.reason, "server changed state"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::outcome::FailureKind;
    use crate::spec::{CheckPath, Monitor, ProbeSpec};

    /// Servers whose checks succeed while their switch is on.
    struct Switches(HashMap<IpAddr, Arc<AtomicBool>>);

    impl Prober for Switches {
        async fn check(&self, check: &Check) -> Result<(), Failure> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.0[&check.key.server].load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err(Failure::new(
                    FailureKind::ConnectionRefused,
                    "connection refused",
                ))
            }
        }
    }

    fn check(server: &str, monitor: &str, interval: u64) -> Check {
        Check {
            key: CheckKey {
                pool: "web-pool".into(),
                server: server.parse().unwrap(),
                monitor: monitor.into(),
            },
            monitor: Arc::new(Monitor {
                name: monitor.into(),
                probe: ProbeSpec::Tcp {
                    port: 80,
                    request: None,
                    response: None,
                },
                interval: Duration::from_secs(interval),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
            }),
            path: CheckPath::Direct,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_follow_interval_rise_and_fall() {
        let web01: IpAddr = "192.168.33.10".parse().unwrap();
        let web02: IpAddr = "192.168.34.10".parse().unwrap();
        let switches: HashMap<_, _> = [(web01, true), (web02, true)]
            .into_iter()
            .map(|(ip, on)| (ip, Arc::new(AtomicBool::new(on))))
            .collect();
        let web01_on = switches[&web01].clone();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        let scheduler = Scheduler::start(
            vec![
                check("192.168.33.10", "tcp", 2),
                check("192.168.33.10", "http", 5),
                check("192.168.34.10", "tcp", 2),
            ],
            SchedulerConfig::default(),
            Switches(switches),
            tx,
        );

        // First checks: every monitor up at once, then each server up.
        let mut ups = 0;
        while ups < 5 {
            match rx.recv().await.unwrap() {
                Event::Monitor { transition, .. } | Event::Server { transition, .. } => {
                    assert_eq!(transition.to, Health::Up);
                    ups += 1;
                }
            }
        }
        assert!(start.elapsed() < Duration::from_millis(200));

        // web01 stops answering at t=1 s: its tcp monitor (every 2 s, fall 3) fails at
        // 2, 4, 6 s: down at 6.1 s, and the server with it.
        tokio::time::sleep_until(start + Duration::from_secs(1)).await;
        web01_on.store(false, Ordering::SeqCst);
        let Event::Monitor { key, transition } = rx.recv().await.unwrap() else {
            panic!("a monitor goes down first");
        };
        assert_eq!((key.server, key.monitor.as_str()), (web01, "tcp"));
        assert_eq!(transition.to, Health::Down);
        assert_eq!(
            start.elapsed().as_millis() / 100,
            61,
            "3 failures 2 s apart"
        );
        let Event::Server {
            server, transition, ..
        } = rx.recv().await.unwrap()
        else {
            panic!("then its server");
        };
        assert_eq!((server, transition.to), (web01, Health::Down));
        assert_eq!(
            transition.reason,
            "monitor tcp: connection refused (3 consecutive failed checks, failed_checks 3)"
        );
        assert_eq!(scheduler.server("web-pool", web02).unwrap().0, Health::Up);

        // The http monitor (every 5 s) fails at 5, 10 and 15 s: down at 15.1 s; the
        // server, down already, sends no second event.
        let Event::Monitor { key, transition } = rx.recv().await.unwrap() else {
            panic!("the http monitor goes down");
        };
        assert_eq!(
            (key.monitor.as_str(), transition.to),
            ("http", Health::Down)
        );
        assert_eq!(start.elapsed().as_millis() / 100, 151);

        // Back at t=16.5 s: tcp succeeds at 18 and 20 s (rise 2): up at 20.1 s, but the
        // server waits for http, which succeeds at 20 and 25 s: both up at 25.1 s.
        tokio::time::sleep_until(start + Duration::from_millis(16_500)).await;
        web01_on.store(true, Ordering::SeqCst);
        let mut seen = Vec::new();
        loop {
            let event = rx.recv().await.unwrap();
            let at = start.elapsed().as_millis() / 100;
            match event {
                Event::Monitor { key, transition } => {
                    seen.push(format!("{} {} {}", key.monitor, transition.to, at))
                }
                Event::Server { transition, .. } => {
                    seen.push(format!("server {} {}", transition.to, at));
                    if transition.to == Health::Up {
                        break;
                    }
                }
            }
        }
        assert_eq!(seen, ["tcp up 201", "http up 251", "server up 251"]);
        let http = scheduler
            .monitors()
            .into_iter()
            .find(|m| m.key.monitor == "http")
            .unwrap();
        assert_eq!(
            http.reason,
            "2 consecutive successful checks (successful_checks 2)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded() {
        struct Slow(
            Arc<std::sync::atomic::AtomicUsize>,
            Arc<std::sync::atomic::AtomicUsize>,
        );
        impl Prober for Slow {
            async fn check(&self, _: &Check) -> Result<(), Failure> {
                let now = self.0.fetch_add(1, Ordering::SeqCst) + 1;
                self.1.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.0.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        }
        let (running, peak) = (
            Arc::default(),
            Arc::<std::sync::atomic::AtomicUsize>::default(),
        );
        let checks = (1..=20)
            .map(|i| check(&format!("10.0.0.{i}"), "tcp", 10))
            .collect();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        let _scheduler = Scheduler::start(
            checks,
            SchedulerConfig {
                max_concurrent: 4,
                initial: Initial::Unknown,
            },
            Slow(running, peak.clone()),
            tx,
        );
        for _ in 0..40 {
            rx.recv().await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        // 20 checks of 0.5 s, 4 at a time: the last completes after 2.5 s.
        assert_eq!(start.elapsed().as_millis() / 100, 25);
    }

    /// Fails the checks of the monitors named in it.
    struct FailingMonitors(Vec<&'static str>);

    impl Prober for FailingMonitors {
        async fn check(&self, check: &Check) -> Result<(), Failure> {
            if self.0.contains(&check.key.monitor.as_str()) {
                Err(Failure::new(
                    FailureKind::ConnectionRefused,
                    "connection refused",
                ))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_keeps_the_states_of_unchanged_checks() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let scheduler = Scheduler::start(
            vec![
                check("192.168.33.10", "tcp", 10),
                check("192.168.33.10", "http", 10),
                check("192.168.34.10", "tcp", 10),
            ],
            SchedulerConfig::default(),
            FailingMonitors(vec!["http"]),
            tx.clone(),
        );
        // tcp up ×2, http down, server web01 down, server web02 up.
        for _ in 0..5 {
            rx.recv().await.unwrap();
        }
        let web01: IpAddr = "192.168.33.10".parse().unwrap();
        let (health, _, down_since) = scheduler.server("web-pool", web01).unwrap();
        assert_eq!(health, Health::Down);
        tokio::time::sleep(Duration::from_secs(3)).await;

        // Same checks plus one: nothing changes state, web01 stays down since then.
        let scheduler = scheduler.restart(
            vec![
                check("192.168.33.10", "tcp", 10),
                check("192.168.33.10", "http", 10),
                check("192.168.34.10", "tcp", 10),
                check("192.168.35.10", "tcp", 10),
            ],
            SchedulerConfig::default(),
            FailingMonitors(vec!["http"]),
            tx.clone(),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        assert!(
            events.iter().all(|e| match e {
                Event::Monitor { key, .. } => key.server.to_string() == "192.168.35.10",
                Event::Server { server, .. } => server.to_string() == "192.168.35.10",
            }),
            "only the new server's first check: {events:?}"
        );
        assert_eq!(
            scheduler.server("web-pool", web01).unwrap(),
            (
                Health::Down,
                // The restarted check ran again: the newest cause, the same since.
                "monitor http: connection refused".into(),
                down_since
            )
        );

        // The failing monitor removed: web01 is up at once, saying why.
        let scheduler = scheduler.restart(
            vec![
                check("192.168.33.10", "tcp", 10),
                check("192.168.34.10", "tcp", 10),
            ],
            SchedulerConfig::default(),
            FailingMonitors(vec!["http"]),
            tx,
        );
        let Event::Server {
            server, transition, ..
        } = rx.recv().await.unwrap()
        else {
            panic!("the server changes first");
        };
        assert_eq!(server, web01);
        assert_eq!((transition.from, transition.to), (Health::Down, Health::Up));
        assert_eq!(transition.reason, "its monitors changed: its monitor is up");
        assert_eq!(scheduler.checks().len(), 2);
    }
}
