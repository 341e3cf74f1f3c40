//! Per-second rates from the engines' cumulative counters.
//!
//! Each engine reports its data plane's counters (packets, bytes and new flows per virtual
//! service and per pool server, packets per verdict reason) about every 2 s, as totals
//! since its maps were created. A rate is the difference between two reports divided by
//! the time between their arrivals at the controller. Reports closer together than
//! [`MIN_INTERVAL`] (an engine reports at once when a server's health changes) are
//! folded into the next one, so that a rate is never the noise of a few milliseconds. A
//! counter that went down (the engine's maps were created anew) gives no rate until the
//! next report.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ricochet_api::types::EngineCounters;
use serde::Serialize;

/// Reports closer than this to the last one used are folded into the next.
pub const MIN_INTERVAL: Duration = Duration::from_millis(900);

/// Packets, bytes and new flows per second.
pub type Rate = [f64; 3];

/// The last rates of one engine and the report they were measured from.
#[derive(Debug, Clone, Default)]
pub struct EngineRates {
    base: Option<(SystemTime, EngineCounters)>,
    services: HashMap<String, Rate>,
    servers: HashMap<(String, IpAddr), Rate>,
    reasons: HashMap<String, f64>,
}

fn per_second(before: u64, now: u64, seconds: f64) -> f64 {
    // A counter that went down was reset: no rate from this pair.
    now.checked_sub(before).map_or(0.0, |d| d as f64 / seconds)
}

fn rate(before: [u64; 3], now: [u64; 3], seconds: f64) -> Rate {
    [0, 1, 2].map(|i| per_second(before[i], now[i], seconds))
}

impl EngineRates {
    /// Takes the counters of a report that arrived at `at`; true if the rates were
    /// measured anew (false for the first report, or one too close to the last).
    pub fn update(&mut self, at: SystemTime, counters: &EngineCounters) -> bool {
        let Some((since, before)) = &self.base else {
            self.base = Some((at, counters.clone()));
            return false;
        };
        let elapsed = match at.duration_since(*since) {
            Ok(d) if d < MIN_INTERVAL => return false,
            Ok(d) => d.as_secs_f64(),
            // The clock went back: start again from this report.
            Err(_) => {
                self.base = Some((at, counters.clone()));
                return false;
            }
        };
        let old_services: HashMap<&str, [u64; 3]> = before
            .services
            .iter()
            .map(|s| (s.name.as_str(), [s.packets, s.bytes, s.new_flows]))
            .collect();
        let old_servers: HashMap<(&str, IpAddr), [u64; 3]> = before
            .servers
            .iter()
            .map(|s| ((s.pool.as_str(), s.ip), [s.packets, s.bytes, s.new_flows]))
            .collect();
        // Objects new in this report have no rate yet.
        self.services = counters
            .services
            .iter()
            .filter_map(|s| {
                let old = old_services.get(s.name.as_str())?;
                let now = [s.packets, s.bytes, s.new_flows];
                Some((s.name.clone(), rate(*old, now, elapsed)))
            })
            .collect();
        self.servers = counters
            .servers
            .iter()
            .filter_map(|s| {
                let old = old_servers.get(&(s.pool.as_str(), s.ip))?;
                let now = [s.packets, s.bytes, s.new_flows];
                Some(((s.pool.clone(), s.ip), rate(*old, now, elapsed)))
            })
            .collect();
        self.reasons = counters
            .reasons
            .iter()
            .filter_map(|(reason, now)| {
                let old = before.reasons.get(reason)?;
                Some((reason.clone(), per_second(*old, *now, elapsed)))
            })
            .collect();
        self.base = Some((at, counters.clone()));
        true
    }

    /// The counters the current rates were measured up to.
    pub fn counters(&self) -> Option<&EngineCounters> {
        self.base.as_ref().map(|(_, c)| c)
    }
}

/// The rates of every connected engine added up, at one moment: what the dashboard's
/// charts plot. Zero rates of services and servers are left out (the pages read a missing
/// entry as zero), so that a thousand idle services cost nothing to send.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch (the controller's clock).
    pub t: u64,
    /// Per virtual service.
    pub services: BTreeMap<String, Rate>,
    /// Per pool, per server address.
    pub servers: BTreeMap<String, BTreeMap<IpAddr, Rate>>,
    /// Per verdict reason: packets per second and the total since the engines' maps were
    /// made.
    pub reasons: BTreeMap<String, (f64, u64)>,
}

/// One decimal: the charts need no more, and the stream is smaller.
fn round(r: Rate) -> Rate {
    r.map(|x| (x * 10.0).round() / 10.0)
}

/// Adds up the rates of `engines` at `t`.
pub fn sample<'a>(t: SystemTime, engines: impl IntoIterator<Item = &'a EngineRates>) -> Sample {
    let mut s = Sample {
        t: t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        ..Sample::default()
    };
    let add = |into: &mut Rate, r: &Rate| (0..3).for_each(|i| into[i] += r[i]);
    for e in engines {
        for (name, r) in &e.services {
            add(s.services.entry(name.clone()).or_default(), r);
        }
        for ((pool, ip), r) in &e.servers {
            add(
                s.servers
                    .entry(pool.clone())
                    .or_default()
                    .entry(*ip)
                    .or_default(),
                r,
            );
        }
        if let Some(counters) = e.counters() {
            for (reason, total) in &counters.reasons {
                let rate = e.reasons.get(reason).copied().unwrap_or(0.0);
                let entry = s.reasons.entry(reason.clone()).or_default();
                entry.0 += rate;
                entry.1 += total;
            }
        }
    }
    s.services = std::mem::take(&mut s.services)
        .into_iter()
        .map(|(k, r)| (k, round(r)))
        .filter(|(_, r)| r.iter().any(|x| *x != 0.0))
        .collect();
    for servers in s.servers.values_mut() {
        *servers = std::mem::take(servers)
            .into_iter()
            .map(|(k, r)| (k, round(r)))
            .filter(|(_, r)| r.iter().any(|x| *x != 0.0))
            .collect();
    }
    s.servers.retain(|_, servers| !servers.is_empty());
    for (rate, _) in s.reasons.values_mut() {
        *rate = (*rate * 10.0).round() / 10.0;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ricochet_api::types::{ServerCounters, ServiceCounters};

    fn counters(packets: u64, flows: u64, forwarded: u64) -> EngineCounters {
        EngineCounters {
            services: vec![
                ServiceCounters {
                    name: "web-vs".into(),
                    packets,
                    bytes: packets * 100,
                    new_flows: flows,
                },
                ServiceCounters {
                    name: "idle-vs".into(),
                    packets: 7,
                    bytes: 700,
                    new_flows: 1,
                },
            ],
            servers: vec![ServerCounters {
                pool: "web-pool".into(),
                ip: "192.168.33.10".parse().unwrap(),
                packets,
                bytes: packets * 100,
                new_flows: flows,
            }],
            reasons: [("forwarded".to_owned(), forwarded)].into(),
        }
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn rates_are_differences_over_the_time_between_reports() {
        let mut e = EngineRates::default();
        assert!(
            !e.update(at(10_000), &counters(100, 10, 100)),
            "no rate yet"
        );
        // Too close to the last: folded into the next.
        assert!(!e.update(at(10_300), &counters(130, 11, 130)));
        assert!(e.update(at(12_000), &counters(300, 30, 300)));
        let s = sample(at(12_000), [&e]);
        assert_eq!(s.t, 12_000);
        assert_eq!(s.services["web-vs"], [100.0, 10_000.0, 10.0]);
        assert!(
            !s.services.contains_key("idle-vs"),
            "zero rates are left out"
        );
        let web01: IpAddr = "192.168.33.10".parse().unwrap();
        assert_eq!(s.servers["web-pool"][&web01], [100.0, 10_000.0, 10.0]);
        assert_eq!(s.reasons["forwarded"], (100.0, 300));
    }

    #[test]
    fn engines_add_up_and_a_reset_counter_gives_no_rate() {
        let (mut a, mut b) = (EngineRates::default(), EngineRates::default());
        a.update(at(0), &counters(0, 0, 0));
        a.update(at(2_000), &counters(200, 20, 200));
        b.update(at(500), &counters(1_000, 100, 1_000));
        b.update(at(2_500), &counters(1_100, 110, 1_100));
        let s = sample(at(3_000), [&a, &b]);
        assert_eq!(s.services["web-vs"], [150.0, 15_000.0, 15.0]);
        assert_eq!(s.reasons["forwarded"], (150.0, 1_300));
        // b's maps were made anew: its counters start again from zero.
        assert!(b.update(at(4_500), &counters(50, 5, 50)));
        let s = sample(at(4_500), [&a, &b]);
        assert_eq!(s.services["web-vs"], [100.0, 10_000.0, 10.0], "a's alone");
        assert!(b.update(at(6_500), &counters(250, 25, 250)));
        assert_eq!(sample(at(6_500), [&b]).services["web-vs"][0], 100.0);
    }
}
