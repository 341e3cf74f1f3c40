//! What to check: monitors resolved from the configuration (ports, defaults), and the
//! checks the scheduler runs, one per (pool, server, monitor).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ricochet_config::{Config, HealthMonitor, HealthMonitorType, HttpResponseCode};

/// What one monitor sends and expects (Avi's type-specific settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeSpec {
    /// Connect; optionally send `request` and expect `response` in the answer.
    Tcp {
        /// The port connected to.
        port: u16,
        /// Sent once connected (`tcp_request`).
        request: Option<String>,
        /// Text the answer must contain (`tcp_response`).
        response: Option<String>,
    },
    /// Send `request` (a request line, optionally with headers), expect a status in
    /// `codes` and, if set, `response` in the body.
    Http {
        /// The port connected to.
        port: u16,
        /// The request line, optionally followed by headers (`http_request`).
        request: String,
        /// Acceptable status classes (`http_response_code`).
        codes: Vec<HttpResponseCode>,
        /// Text the body must contain (`http_response`).
        response: Option<String>,
    },
    /// Send `request` as one datagram; with `response`, expect an answer containing it;
    /// without, success is the absence of an ICMP port unreachable (Avi's rule) on the
    /// direct path, and any answer through the VIP path (see [`CheckPath::Vip`]).
    Udp {
        /// The port sent to.
        port: u16,
        /// The datagram's payload (`udp_request`; empty when absent).
        request: Option<String>,
        /// Text the answer must contain (`udp_response`).
        response: Option<String>,
    },
    /// ICMP echo (ping).
    Icmp,
}

impl ProbeSpec {
    /// The port checked (`None` for ICMP).
    pub fn port(&self) -> Option<u16> {
        match self {
            Self::Tcp { port, .. } | Self::Http { port, .. } | Self::Udp { port, .. } => {
                Some(*port)
            }
            Self::Icmp => None,
        }
    }
}

/// A health monitor ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    /// The monitor's name in the configuration.
    pub name: String,
    /// What it sends and expects.
    pub probe: ProbeSpec,
    /// Time between the starts of two checks (`send_interval`).
    pub interval: Duration,
    /// Time a check may take (`receive_timeout`).
    pub timeout: Duration,
    /// Consecutive successes to go up (`successful_checks`).
    pub rise: u32,
    /// Consecutive failures to go down (`failed_checks`).
    pub fall: u32,
}

/// Why a monitor cannot run against a service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A TCP, HTTP or UDP monitor without `monitor_port` on a pool no service gives a port.
    #[error(
        "monitor {monitor:?} needs a port: set monitor_port, or use its pool in a virtual service"
    )]
    NoPort {
        /// The monitor.
        monitor: String,
    },
}

impl Monitor {
    /// Resolves a configured monitor; `service_port` is the port of the virtual service
    /// whose pool it checks (used when `monitor_port` is absent).
    pub fn from_config(m: &HealthMonitor, service_port: Option<u16>) -> Result<Self, SpecError> {
        let port = || {
            m.monitor_port
                .or(service_port)
                .ok_or_else(|| SpecError::NoPort {
                    monitor: m.name.clone(),
                })
        };
        let probe = match m.kind {
            HealthMonitorType::Tcp => {
                let tcp = m.tcp_monitor.clone().unwrap_or_default();
                ProbeSpec::Tcp {
                    port: port()?,
                    request: tcp.tcp_request,
                    response: tcp.tcp_response,
                }
            }
            HealthMonitorType::Http => {
                let http = m.http_monitor.clone().unwrap_or_default();
                ProbeSpec::Http {
                    port: port()?,
                    request: http.http_request,
                    codes: http.http_response_code,
                    response: http.http_response,
                }
            }
            HealthMonitorType::Udp => {
                let udp = m.udp_monitor.clone().unwrap_or_default();
                ProbeSpec::Udp {
                    port: port()?,
                    request: udp.udp_request,
                    response: udp.udp_response,
                }
            }
            HealthMonitorType::Icmp => ProbeSpec::Icmp,
        };
        Ok(Self {
            name: m.name.clone(),
            probe,
            interval: Duration::from_secs(m.send_interval.into()),
            timeout: Duration::from_secs(m.receive_timeout.into()),
            rise: m.successful_checks,
            fall: m.failed_checks,
        })
    }
}

/// How a check reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckPath {
    /// To the server's own address, like any client of the server would.
    Direct,
    /// The way client traffic does: to `vip` (same port), encapsulated to the server by
    /// the DSR probe encapsulator for packets carrying `mark` (see [`crate::DsrPath`]).
    /// The server must hold the VIP on `lo` and decapsulate. When this fails, the check
    /// also probes the server's own address to tell a dead server from a broken path.
    Vip {
        /// The virtual service's VIP.
        vip: IpAddr,
        /// The socket mark registered for this server.
        mark: u32,
    },
}

/// Identifies a check: one monitor on one server of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckKey {
    /// The pool's name.
    pub pool: String,
    /// The server's own address.
    pub server: IpAddr,
    /// The monitor's name.
    pub monitor: String,
}

impl fmt::Display for CheckKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool {} server {} monitor {}",
            self.pool, self.server, self.monitor
        )
    }
}

/// One check the scheduler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Pool, server, monitor.
    pub key: CheckKey,
    /// The monitor (shared by every server it checks).
    pub monitor: Arc<Monitor>,
    /// How the server is reached.
    pub path: CheckPath,
}

/// A check derived from the configuration, before its path is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCheck {
    /// Pool, server, monitor.
    pub key: CheckKey,
    /// The monitor with its port resolved.
    pub monitor: Arc<Monitor>,
    /// The VIP of the (first enabled) virtual service using the pool, for the VIP path.
    pub vip: Option<IpAddr>,
    /// Whether the monitor asks to check through the VIP path (`dsr_path: true`).
    pub dsr_path: bool,
}

impl PlannedCheck {
    /// This check on the server's own address.
    pub fn direct(&self) -> Check {
        Check {
            key: self.key.clone(),
            monitor: self.monitor.clone(),
            path: CheckPath::Direct,
        }
    }

    /// This check through the VIP with `mark` (from [`crate::DsrPath::register`]); direct
    /// when the pool serves no virtual service (there is no VIP to go through).
    pub fn through_vip(&self, mark: u32) -> Check {
        Check {
            key: self.key.clone(),
            monitor: self.monitor.clone(),
            path: match self.vip {
                Some(vip) => CheckPath::Vip { vip, mark },
                None => CheckPath::Direct,
            },
        }
    }
}

/// Every check a configuration asks for: each monitor of each pool on each enabled
/// server. The port (when `monitor_port` is absent) and the VIP come from the first
/// enabled virtual service using the pool (the first port of its first service); a pool
/// used by several services is checked once per server and monitor. Disabled servers
/// get no traffic and are not checked. Names must resolve ([`Config::validate`]).
pub fn plan_checks(config: &Config) -> Result<Vec<PlannedCheck>, SpecError> {
    let mut checks = Vec::new();
    let mut seen = BTreeSet::new();
    for pool in &config.pools {
        let service = config
            .virtual_services
            .iter()
            .find(|vs| vs.enabled && vs.pool == pool.name);
        let service_port = service.and_then(|vs| vs.services.first().map(|s| s.port));
        for name in &pool.health_monitors {
            let Some(m) = config.health_monitors.iter().find(|m| &m.name == name) else {
                continue;
            };
            let monitor = Arc::new(Monitor::from_config(m, service_port)?);
            for server in pool.servers.iter().filter(|s| s.enabled) {
                let key = CheckKey {
                    pool: pool.name.clone(),
                    server: server.ip,
                    monitor: name.clone(),
                };
                if seen.insert(key.clone()) {
                    checks.push(PlannedCheck {
                        key,
                        monitor: monitor.clone(),
                        vip: service.map(|vs| vs.vip),
                        dsr_path: m.dsr_path,
                    });
                }
            }
        }
    }
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_plans_one_check_per_pool_server_and_monitor() {
        let config =
            Config::from_yaml_str(include_str!("../../config/examples/seed.yaml")).unwrap();
        let checks = plan_checks(&config).unwrap();
        let keys: Vec<String> = checks
            .iter()
            .map(|c| {
                format!(
                    "{} {} {} {:?}",
                    c.key.pool,
                    c.key.server,
                    c.key.monitor,
                    c.monitor.probe.port()
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                "web-pool 192.168.33.10 web-tcp Some(80)",
                "web-pool 192.168.34.10 web-tcp Some(80)",
                "web-pool-v6 fc00::10 web-tcp Some(80)",
                "web-pool-v6 fc00:34::10 web-tcp Some(80)",
                "dns-pool 192.168.33.10 dns-udp Some(53)",
                "dns-pool 192.168.34.10 dns-udp Some(53)",
            ]
        );
        let web = &checks[0];
        assert_eq!(web.vip, Some("192.168.35.241".parse().unwrap()));
        assert_eq!(web.monitor.interval, Duration::from_secs(10));
        assert_eq!(web.monitor.timeout, Duration::from_secs(4));
        assert_eq!((web.monitor.rise, web.monitor.fall), (2, 2));
        assert_eq!(
            web.through_vip(7).path,
            CheckPath::Vip {
                vip: "192.168.35.241".parse().unwrap(),
                mark: 7
            }
        );
        assert_eq!(
            checks[4].monitor.probe,
            ProbeSpec::Udp {
                port: 53,
                request: Some("ping".into()),
                response: None
            }
        );
    }

    #[test]
    fn monitor_port_wins_and_a_portless_monitor_is_refused() {
        let config = Config::from_yaml_str(
            "health_monitors:
  - { name: h, type: http, monitor_port: 8080 }
  - { name: t, type: tcp }
  - { name: p, type: icmp }
",
        )
        .unwrap();
        let h = Monitor::from_config(&config.health_monitors[0], Some(80)).unwrap();
        assert_eq!(h.probe.port(), Some(8080));
        assert!(
            matches!(h.probe, ProbeSpec::Http { ref request, ref codes, .. }
            if request == "GET / HTTP/1.0" && codes == &[HttpResponseCode::Http2xx, HttpResponseCode::Http3xx])
        );
        assert_eq!(
            Monitor::from_config(&config.health_monitors[1], None)
                .unwrap_err()
                .to_string(),
            "monitor \"t\" needs a port: set monitor_port, or use its pool in a virtual service"
        );
        assert_eq!(
            Monitor::from_config(&config.health_monitors[2], None)
                .unwrap()
                .probe,
            ProbeSpec::Icmp
        );
    }
}
