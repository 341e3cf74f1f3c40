//! Avi's rise/fall state machine for one (pool, server, monitor), and the rule that
//! combines a server's monitors. Pure: every function takes the time it should record,
//! so tests drive it with a made-up clock.

use std::fmt;
use std::time::SystemTime;

use crate::outcome::Failure;

/// The health of one monitor on one server, or of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// No check has completed yet (and the state machine started in [`Initial::Unknown`]).
    Unknown,
    /// Up: the server gets new flows.
    Up,
    /// Down: the server leaves the Maglev table.
    Down,
}

impl Health {
    /// `"unknown"`, `"up"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state a monitor starts in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Initial {
    /// Unknown until the first check completes, which decides at once (up on success,
    /// down on failure); rise and fall apply from then on. A restarted engine neither
    /// withholds healthy servers for rise × interval nor keeps sending to dead ones for
    /// fall × interval.
    #[default]
    Unknown,
    /// Up: `fall` failures are needed to take the server out (trust the configuration).
    Up,
    /// Down: `rise` successes are needed to let the server in (distrust new servers).
    Down,
}

/// A change of state, with why and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: Health,
    /// The state after.
    pub to: Health,
    /// A sentence saying why, e.g. `connection refused (2 consecutive failures, fall 2)`.
    pub reason: String,
    /// When the deciding check completed.
    pub at: SystemTime,
}

/// Rise/fall counting for one (pool, server, monitor).
#[derive(Debug, Clone)]
pub struct MonitorState {
    rise: u32,
    fall: u32,
    health: Health,
    successes: u32,
    failures: u32,
    reason: String,
    since: Option<SystemTime>,
    last_failure: Option<Failure>,
}

impl MonitorState {
    /// A state machine needing `rise` consecutive successes to go up and `fall`
    /// consecutive failures to go down (each at least 1; Avi's `successful_checks` and
    /// `failed_checks`).
    pub fn new(rise: u32, fall: u32, initial: Initial) -> Self {
        let (health, reason) = match initial {
            Initial::Unknown => (Health::Unknown, "no check completed yet"),
            Initial::Up => (Health::Up, "initially up"),
            Initial::Down => (Health::Down, "initially down"),
        };
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            health,
            successes: 0,
            failures: 0,
            reason: reason.to_owned(),
            since: None,
            last_failure: None,
        }
    }

    /// The current state.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Why the state is what it is (the reason of the last transition).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// When the current state began (`None` for the initial state).
    pub fn since(&self) -> Option<SystemTime> {
        self.since
    }

    /// The most recent failed check, if the last check failed.
    pub fn last_failure(&self) -> Option<&Failure> {
        self.last_failure.as_ref()
    }

    /// Records the outcome of a check that completed at `at`; returns the transition it
    /// caused, if any.
    pub fn record(&mut self, outcome: &Result<(), Failure>, at: SystemTime) -> Option<Transition> {
        let (to, reason) = match outcome {
            Ok(()) => {
                self.last_failure = None;
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                match self.health {
                    Health::Up => return None,
                    Health::Unknown => (Health::Up, "first check succeeded".to_owned()),
                    Health::Down if self.successes >= self.rise => (
                        Health::Up,
                        format!(
                            "{} consecutive successful checks (successful_checks {})",
                            self.successes, self.rise
                        ),
                    ),
                    Health::Down => return None,
                }
            }
            Err(failure) => {
                self.last_failure = Some(failure.clone());
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                match self.health {
                    Health::Down => {
                        // Stay down, but show the newest cause (it may have changed).
                        self.reason = failure.to_string();
                        return None;
                    }
                    Health::Unknown => (Health::Down, format!("first check failed: {failure}")),
                    Health::Up if self.failures >= self.fall => (
                        Health::Down,
                        format!(
                            "{failure} ({} consecutive failed checks, failed_checks {})",
                            self.failures, self.fall
                        ),
                    ),
                    Health::Up => return None,
                }
            }
        };
        let from = self.health;
        self.health = to;
        self.reason = reason.clone();
        self.since = Some(at);
        Some(Transition {
            from,
            to,
            reason,
            at,
        })
    }
}

/// A server's health from its monitors' (Avi's rule: a server is up only when every
/// monitor attached to its pool says up; any monitor down makes it down).
///
/// - no monitors: up (unmonitored servers get traffic, as in Avi);
/// - any monitor down: down, with the reasons of the monitors that are down;
/// - else any unknown: unknown;
/// - else up.
pub fn combine<'a>(
    monitors: impl IntoIterator<Item = (&'a str, &'a MonitorState)>,
) -> (Health, String) {
    let mut down = Vec::new();
    let mut unknown = Vec::new();
    let mut count = 0;
    for (name, state) in monitors {
        count += 1;
        match state.health() {
            Health::Down => down.push(format!("monitor {name}: {}", state.reason())),
            Health::Unknown => unknown.push(name),
            Health::Up => {}
        }
    }
    if count == 0 {
        (Health::Up, "no health monitor".to_owned())
    } else if !down.is_empty() {
        (Health::Down, down.join("; "))
    } else if !unknown.is_empty() {
        (
            Health::Unknown,
            format!("waiting for the first check of {}", unknown.join(", ")),
        )
    } else if count == 1 {
        (Health::Up, "its monitor is up".to_owned())
    } else {
        (Health::Up, format!("all {count} monitors are up"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outcome::FailureKind;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn refused() -> Result<(), Failure> {
        Err(Failure::new(
            FailureKind::ConnectionRefused,
            "connection refused",
        ))
    }

    #[test]
    fn unknown_start_is_decided_by_the_first_check() {
        let mut up = MonitorState::new(3, 3, Initial::Unknown);
        assert_eq!(up.health(), Health::Unknown);
        let tr = up.record(&Ok(()), t(1)).expect("first success decides");
        assert_eq!((tr.from, tr.to, tr.at), (Health::Unknown, Health::Up, t(1)));
        assert_eq!(up.since(), Some(t(1)));

        let mut down = MonitorState::new(3, 3, Initial::Unknown);
        let tr = down
            .record(&refused(), t(1))
            .expect("first failure decides");
        assert_eq!(tr.to, Health::Down);
        assert_eq!(tr.reason, "first check failed: connection refused");
    }

    #[test]
    fn fall_needs_consecutive_failures_and_a_success_resets_the_count() {
        let mut s = MonitorState::new(2, 3, Initial::Up);
        assert_eq!(s.record(&refused(), t(0)), None);
        assert_eq!(s.record(&refused(), t(10)), None);
        assert_eq!(
            s.record(&Ok(()), t(20)),
            None,
            "a success resets the failures"
        );
        assert_eq!(s.record(&refused(), t(30)), None);
        assert_eq!(s.record(&refused(), t(40)), None);
        let tr = s
            .record(&refused(), t(50))
            .expect("third consecutive failure");
        assert_eq!((tr.from, tr.to, tr.at), (Health::Up, Health::Down, t(50)));
        assert_eq!(
            tr.reason,
            "connection refused (3 consecutive failed checks, failed_checks 3)"
        );
        assert_eq!(s.health(), Health::Down);
        assert_eq!(s.since(), Some(t(50)));
    }

    #[test]
    fn rise_needs_consecutive_successes_and_a_failure_resets_the_count() {
        let mut s = MonitorState::new(2, 1, Initial::Down);
        assert_eq!(s.record(&Ok(()), t(0)), None);
        assert_eq!(s.record(&refused(), t(10)), None, "a failure resets");
        assert_eq!(s.record(&Ok(()), t(20)), None);
        let tr = s
            .record(&Ok(()), t(30))
            .expect("second consecutive success");
        assert_eq!((tr.from, tr.to), (Health::Down, Health::Up));
        assert_eq!(
            tr.reason,
            "2 consecutive successful checks (successful_checks 2)"
        );
        // Further successes change nothing.
        assert_eq!(s.record(&Ok(()), t(40)), None);
    }

    #[test]
    fn staying_down_shows_the_newest_cause() {
        let mut s = MonitorState::new(1, 1, Initial::Up);
        s.record(&refused(), t(0)).unwrap();
        let timeout = Err(Failure::new(FailureKind::Timeout, "timeout after 2 s"));
        assert_eq!(s.record(&timeout, t(10)), None);
        assert_eq!(s.reason(), "timeout after 2 s");
        assert_eq!(s.since(), Some(t(0)), "still down since the first failure");
        assert_eq!(s.last_failure().unwrap().kind, FailureKind::Timeout);
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once_and_zero_counts_as_one() {
        let mut s = MonitorState::new(0, 0, Initial::Up);
        assert!(s.record(&refused(), t(0)).is_some());
        assert!(s.record(&Ok(()), t(1)).is_some());
        assert!(s.record(&refused(), t(2)).is_some());
    }

    #[test]
    fn a_server_is_down_if_any_monitor_is_down() {
        let mut up = MonitorState::new(1, 1, Initial::Unknown);
        up.record(&Ok(()), t(0));
        let mut down = MonitorState::new(1, 1, Initial::Unknown);
        down.record(&refused(), t(0));
        let unknown = MonitorState::new(1, 1, Initial::Unknown);

        assert_eq!(combine([]).0, Health::Up);
        assert_eq!(
            combine([("tcp", &up)]),
            (Health::Up, "its monitor is up".into())
        );
        assert_eq!(
            combine([("tcp", &up), ("http", &up)]),
            (Health::Up, "all 2 monitors are up".into())
        );
        let (health, reason) = combine([("tcp", &up), ("http", &down), ("udp", &unknown)]);
        assert_eq!(health, Health::Down);
        assert_eq!(
            reason,
            "monitor http: first check failed: connection refused"
        );
        assert_eq!(
            combine([("tcp", &up), ("udp", &unknown)]),
            (Health::Unknown, "waiting for the first check of udp".into())
        );
    }
}
