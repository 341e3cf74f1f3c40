//! The engine's Prometheus metrics: `GET /metrics` in the Prometheus text format (0.0.4),
//! served on `--metrics-listen` by a thread of its own.
//!
//! The run loop already reads every counter of the data plane once a second for the
//! state file (`ricochet status`); the same reading, with the structure it belongs to, is
//! published here as a [`Snapshot`] ([`crate::Runner::write_state_logged`]). A scrape
//! encodes the newest snapshot: it never touches the kernel nor waits for the loop, its
//! counters and labels come from one moment (a service id reused by an apply can never
//! lend its counters to another name), and they are at most a second old — well inside
//! any scrape interval.
//!
//! Names follow Prometheus's conventions: `ricochet_` prefix, counters end in `_total`,
//! base units (bytes, seconds) in the name. Per virtual service the labels are `name`,
//! `vip`, `port` (`80`, `80,443`, `8000-8100` or `all`) and `protocol` (`tcp`, `udp`);
//! per server `pool` and `server` are added. The data plane counts per server of a pool,
//! not per service and server: a pool used by several services has its servers' series
//! with empty service labels (which Prometheus treats as absent).
//!
//! Authentication: on loopback (the typical Prometheus agent on the host) none; on any
//! other address a bearer token is required (`--metrics-token-file`), which Prometheus
//! sends with `authorization: { credentials_file: ... }` in its scrape config. The engine
//! refuses to listen beyond loopback without one, since its metrics name every VIP and
//! server address.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use ricochet_api::types::HealthState;
use ricochet_common::Event;
use ricochet_config::{PortSpec, Protocol};
use tracing::{info, warn};

use crate::state::StateFile;

/// Where and how the engine serves its metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsOptions {
    /// The address of `GET /metrics`.
    pub listen: SocketAddr,
    /// The bearer token scrapers must send, read from a file (required beyond loopback).
    pub token_file: Option<PathBuf>,
}

impl MetricsOptions {
    /// Checks the options: an address beyond loopback needs a token file.
    pub fn new(listen: SocketAddr, token_file: Option<PathBuf>) -> anyhow::Result<Self> {
        if !listen.ip().is_loopback() && token_file.is_none() {
            bail!(
                "--metrics-listen {listen} is reachable from other hosts and the metrics name \
                 every VIP and server: give --metrics-token-file FILE (the bearer token \
                 Prometheus sends: `authorization: {{ credentials_file: FILE }}` in its scrape \
                 config), or listen on loopback (127.0.0.1:PORT)"
            );
        }
        Ok(Self { listen, token_file })
    }

    /// The token, read from its file (at least 16 characters, surrounding whitespace
    /// trimmed).
    fn token(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the metrics token file {}", path.display()))?;
        let token = text.trim();
        if token.len() < 16 {
            bail!(
                "the metrics token file {} holds {} characters: a token needs at least 16 \
                 (for example `openssl rand -hex 32`)",
                path.display(),
                token.len()
            );
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!(
                "the metrics token in {} contains whitespace: a bearer token is one word",
                path.display()
            );
        }
        Ok(Some(token.to_owned()))
    }
}

/// What the engine counted, as of its last state-file write.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The state file's content: structure, counters, health, transmit warnings.
    pub state: StateFile,
    /// Every pool server the configuration runs, servers marked down included: (pool,
    /// address, ratio, enabled).
    pub servers: Vec<(String, IpAddr, u32, bool)>,
    /// The program's [`Event`] counters.
    pub events: Vec<(Event, u64)>,
    /// Drivers' XDP transmit error counters: (interface, counter) → value.
    pub transmit_counters: BTreeMap<(String, String), u64>,
    /// The flow table's size.
    pub flow_capacity: u32,
}

/// The engine's metrics: the newest [`Snapshot`] and what the run loop records itself.
pub struct EngineMetrics {
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    apply_duration: Histogram,
    apply_failures: Counter,
    /// Whether the controller answers, in controller mode.
    controller: Mutex<Option<Arc<dyn Fn() -> bool + Send + Sync>>>,
}

impl std::fmt::Debug for EngineMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineMetrics").finish_non_exhaustive()
    }
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
            snapshot: Mutex::new(None),
            // 0.5 ms to 8 s: one service changed among many is a few ms, 10,000 new
            // ones about a second.
            apply_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            apply_failures: Counter::default(),
            controller: Mutex::new(None),
        }
    }
}

impl EngineMetrics {
    /// Replaces the snapshot scrapes encode.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(snapshot));
    }

    /// Records one data-plane apply: its duration, or its failure.
    pub fn observe_apply(&self, took: Duration, ok: bool) {
        if ok {
            self.apply_duration.observe(took.as_secs_f64());
        } else {
            self.apply_failures.inc();
        }
    }

    /// Reports the controller link's state through `connected` (controller mode).
    pub fn follow_controller(&self, connected: impl Fn() -> bool + Send + Sync + 'static) {
        *self.controller.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(connected));
    }

    /// Every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let snapshot = self
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let connected = self
            .controller
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|f| f());
        let mut registry = Registry::default();
        registry.register(
            "ricochet_engine_apply_duration_seconds",
            "Time the data plane took to apply a configuration (map writes, Maglev tables)",
            self.apply_duration.clone(),
        );
        registry.register(
            "ricochet_engine_apply_failures",
            "Configurations the data plane refused or failed to apply (the running one stayed)",
            self.apply_failures.clone(),
        );
        registry.register_collector(Box::new(SnapshotCollector {
            snapshot,
            connected,
        }));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
            .expect("writing to a String does not fail");
        text
    }
}

/// The snapshot's families, encoded at each scrape.
#[derive(Debug)]
struct SnapshotCollector {
    snapshot: Option<Arc<Snapshot>>,
    connected: Option<bool>,
}

/// `80`, `80,443`, `8000-8100`, or `all`.
pub fn port_label(ports: &PortSpec) -> String {
    match ports {
        PortSpec::All => "all".to_owned(),
        PortSpec::Ranges(r) => r
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn protocol_label(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The verdict a reason's packets got: its name says it (`forwarded` and
/// `icmp_too_big_sent` leave by XDP_TX or redirect).
fn verdict_label(reason: &str) -> &'static str {
    if reason.starts_with("pass_") {
        "pass"
    } else if reason.starts_with("drop_") {
        "drop"
    } else {
        "tx"
    }
}

type Labels = Vec<(&'static str, String)>;

/// One family of constant values.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    series: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: i64) -> ConstGauge<i64> {
    ConstGauge::new(v)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter as C, Gauge as G};
        if let Some(connected) = self.connected {
            family(
                &mut e,
                "ricochet_engine_controller_connected",
                "1 while the controller answers the engine's calls, 0 while it does not (or refuses)",
                G,
                [(vec![], gauge(connected.into()))],
            )?;
        }
        let Some(snap) = &self.snapshot else {
            // Not attached yet: no configuration runs.
            return family(
                &mut e,
                "ricochet_engine_attached",
                "1 once the data plane is attached and a configuration runs",
                G,
                [(vec![], gauge(0))],
            );
        };
        let st = &snap.state;
        family(
            &mut e,
            "ricochet_engine_attached",
            "1 once the data plane is attached and a configuration runs",
            G,
            [(vec![], gauge(1))],
        )?;
        family(
            &mut e,
            "ricochet_engine_info",
            "The engine's version, interface and configuration source (always 1)",
            G,
            [(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("interface", st.interface.clone()),
                    (
                        "source",
                        if st.controller.is_some() {
                            "controller"
                        } else {
                            "file"
                        }
                        .to_owned(),
                    ),
                ],
                gauge(1),
            )],
        )?;
        family(
            &mut e,
            "ricochet_engine_revision",
            "The data plane's revision: one more per change applied, continued across restarts",
            G,
            [(vec![], gauge(st.status.revision as i64))],
        )?;
        if let Some(r) = st.controller_revision {
            family(
                &mut e,
                "ricochet_engine_controller_revision",
                "The controller's configuration revision that runs",
                G,
                [(vec![], gauge(r as i64))],
            )?;
        }

        // Virtual services.
        let service_labels = |s: &ricochet_engine::status::ServiceStatus| -> Labels {
            vec![
                ("name", s.name.clone()),
                ("vip", s.vip.to_string()),
                ("port", port_label(&s.ports)),
                ("protocol", protocol_label(s.protocol).to_owned()),
            ]
        };
        type Pick = fn(&ricochet_engine::status::Count) -> u64;
        let counts: [(&str, &str, Pick); 3] = [
            ("packets", "Packets", |c| c.packets),
            (
                "bytes",
                "Bytes (frames as received, Ethernet header included, before encapsulation)",
                |c| c.bytes,
            ),
            ("new_flows", "New flows (hashed to a server)", |c| {
                c.new_flows
            }),
        ];
        for (what, help, pick) in counts {
            family(
                &mut e,
                &format!("ricochet_virtual_service_{what}"),
                &format!("{help} the XDP program forwarded for a virtual service"),
                C,
                st.status
                    .services
                    .iter()
                    .map(|s| (service_labels(s), counter(pick(&s.counters)))),
            )?;
        }

        // Servers: the labels of the one service using their pool, if only one does.
        let mut users: HashMap<&str, Vec<&ricochet_engine::status::ServiceStatus>> = HashMap::new();
        for s in &st.status.services {
            users.entry(s.pool.as_str()).or_default().push(s);
        }
        let server_labels = |pool: &str, ip: IpAddr| -> Labels {
            let mut l = match users.get(pool).map(Vec::as_slice) {
                Some([only]) => service_labels(only),
                _ => ["name", "vip", "port", "protocol"]
                    .into_iter()
                    .map(|k| (k, String::new()))
                    .collect(),
            };
            l.push(("pool", pool.to_owned()));
            l.push(("server", ip.to_string()));
            l
        };
        for (what, help, pick) in counts {
            family(
                &mut e,
                &format!("ricochet_server_{what}"),
                &format!("{help} the XDP program sent to a pool server"),
                C,
                st.status.pools.iter().flat_map(|p| {
                    p.servers
                        .iter()
                        .map(|s| (server_labels(&p.name, s.ip), counter(pick(&s.counters))))
                }),
            )?;
        }
        family(
            &mut e,
            "ricochet_server_weight",
            "A pool server's ratio (its share of its pool's Maglev table while it takes new flows)",
            G,
            snap.servers
                .iter()
                .map(|(pool, ip, ratio, _)| (server_labels(pool, *ip), gauge(*ratio as i64))),
        )?;
        family(
            &mut e,
            "ricochet_server_enabled",
            "1 if the configuration enables the server, 0 if it is disabled (draining)",
            G,
            snap.servers
                .iter()
                .map(|(pool, ip, _, enabled)| (server_labels(pool, *ip), gauge((*enabled).into()))),
        )?;
        let active: HashMap<(&str, IpAddr), bool> = st
            .status
            .pools
            .iter()
            .flat_map(|p| {
                p.servers
                    .iter()
                    .map(|s| ((p.name.as_str(), s.ip), s.state == "active"))
            })
            .collect();
        family(
            &mut e,
            "ricochet_server_active",
            "1 if the server takes new flows now (enabled and not marked down by health)",
            G,
            snap.servers.iter().map(|(pool, ip, _, _)| {
                let on = active.get(&(pool.as_str(), *ip)).copied().unwrap_or(false);
                (server_labels(pool, *ip), gauge(on.into()))
            }),
        )?;
        family(
            &mut e,
            "ricochet_server_health",
            "A server's health from the engine's monitors: 1 for its state (up, down or unknown), 0 for the others",
            G,
            st.health.iter().flat_map(|h| {
                [
                    ("up", HealthState::Up),
                    ("down", HealthState::Down),
                    ("unknown", HealthState::Unknown),
                ]
                .into_iter()
                .map(|(name, state)| {
                    let mut l = server_labels(&h.pool, h.ip);
                    l.push(("state", name.to_owned()));
                    (l, gauge((h.state == state).into()))
                })
                .collect::<Vec<_>>()
            }),
        )?;

        // The program's own counters.
        family(
            &mut e,
            "ricochet_packets",
            "Packets the XDP program handled, by verdict (tx, pass, drop) and reason",
            C,
            st.status.reasons.iter().map(|(reason, n)| {
                (
                    vec![
                        ("verdict", verdict_label(reason).to_owned()),
                        ("reason", reason.clone()),
                    ],
                    counter(*n),
                )
            }),
        )?;
        for (event, n) in &snap.events {
            let (name, help) = match event {
                Event::FlowInsertFailed => (
                    "ricochet_flow_table_insert_failures",
                    "New flows forwarded whose flow-table entry could not be written (their next packet is hashed again)",
                ),
                Event::FlowMissNonSyn => (
                    "ricochet_flow_table_non_syn_misses",
                    "TCP packets other than a SYN that found no flow-table entry and were hashed again (flows evicted or reshuffled)",
                ),
            };
            family(&mut e, name, help, C, [(vec![], counter(*n))])?;
        }
        family(
            &mut e,
            "ricochet_flow_table_capacity",
            "Entries the flow table (LRU) holds at most",
            G,
            [(vec![], gauge(snap.flow_capacity.into()))],
        )?;
        // The flow table's last count (absent before the first).
        if let Some(c) = &st.status.flows {
            family(
                &mut e,
                "ricochet_flow_table_entries",
                "Entries in the flow table at the last count: live flows and idle ones the LRU has not evicted yet",
                G,
                [(vec![], gauge(c.entries as i64))],
            )?;
            family(
                &mut e,
                "ricochet_flow_table_live_entries",
                "Entries of the flow table seen within the flow idle timeout at the last count",
                G,
                [(vec![], gauge(c.live as i64))],
            )?;
            family(
                &mut e,
                "ricochet_flow_table_count_timestamp_seconds",
                "When the flow table was last counted (Unix time)",
                G,
                [(vec![], gauge(c.counted_unix as i64))],
            )?;
            family(
                &mut e,
                "ricochet_virtual_service_live_flows",
                "A virtual service's flow-table entries seen within the flow idle timeout, at the last count",
                G,
                st.status.services.iter().filter_map(|s| {
                    s.live_flows.map(|n| (service_labels(s), gauge(n as i64)))
                }),
            )?;
        }

        // XDP frames lost on transmit, as the engine's checks find them.
        family(
            &mut e,
            "ricochet_xdp_transmit_problem",
            "1 for each problem the engine's transmit checks find now (see `ricochet status`): \
             kind veth_peer_drops_xdp, veth_peer_unchecked or xdp_transmit_errors (a rise in the last minute)",
            G,
            st.warnings.iter().map(|w| {
                (
                    vec![
                        ("kind", w.kind.clone()),
                        ("interface", w.interface.clone()),
                    ],
                    gauge(1),
                )
            }),
        )?;
        family(
            &mut e,
            "ricochet_xdp_transmit_errors",
            "Drivers' XDP transmit error counters (ethtool -S) on the engine's interfaces, read every 5 s",
            C,
            snap.transmit_counters.iter().map(|((interface, name), v)| {
                (
                    vec![
                        ("interface", interface.clone()),
                        ("counter", name.clone()),
                    ],
                    counter(*v),
                )
            }),
        )?;
        Ok(())
    }
}

/// Serves `GET /metrics` on `options.listen` from a thread of its own, until the process
/// ends. The address is bound (and the token read) before this returns, so a bad address
/// or token file stops the start-up with its reason. The bound address.
pub fn serve(options: &MetricsOptions, metrics: Arc<EngineMetrics>) -> anyhow::Result<SocketAddr> {
    let token = options.token()?;
    let listener = std::net::TcpListener::bind(options.listen)
        .with_context(|| format!("listening for metrics on {}", options.listen))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the metrics server's runtime")?;
    let state = Served {
        metrics,
        token: token.map(Arc::from),
    };
    let auth = if state.token.is_some() {
        "bearer token required"
    } else {
        "no token (loopback)"
    };
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return warn!("metrics server: {e}"),
                };
                let router = axum::Router::new()
                    .route("/metrics", axum::routing::get(scrape))
                    .with_state(state);
                if let Err(e) = axum::serve(listener, router).await {
                    warn!("metrics server stopped: {e}");
                }
            })
        })
        .context("starting the metrics server's thread")?;
    info!("metrics on http://{addr}/metrics ({auth})");
    Ok(addr)
}

#[derive(Clone)]
struct Served {
    metrics: Arc<EngineMetrics>,
    token: Option<Arc<str>>,
}

async fn scrape(State(state): State<Served>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        if !presented.is_some_and(|p| same(p.as_bytes(), token.as_bytes())) {
            let error = if presented.is_some() {
                "Bearer realm=\"ricochet-metrics\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"ricochet-metrics\""
            };
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, error)],
                "these metrics need the token of --metrics-token-file: send \
                 \"Authorization: Bearer <token>\"\n",
            )
                .into_response();
        }
    }
    let metrics = state.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding: {e}\n"),
        )
            .into_response(),
    }
}

/// Compares in time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_loopback_a_token_is_required_and_must_be_a_real_one() {
        let e = MetricsOptions::new("0.0.0.0:9480".parse().unwrap(), None).unwrap_err();
        assert!(format!("{e}").contains("--metrics-token-file"), "{e}");
        assert!(MetricsOptions::new("127.0.0.1:9480".parse().unwrap(), None).is_ok());
        assert!(MetricsOptions::new("[::1]:9480".parse().unwrap(), None).is_ok());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "short\n").unwrap();
        let o = MetricsOptions::new("0.0.0.0:9480".parse().unwrap(), Some(file.clone())).unwrap();
        let e = o.token().unwrap_err();
        assert!(format!("{e}").contains("at least 16"), "{e}");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        assert_eq!(o.token().unwrap().as_deref(), Some("0123456789abcdef0123"));
        let missing = MetricsOptions::new(
            "0.0.0.0:9480".parse().unwrap(),
            Some(dir.path().join("absent")),
        )
        .unwrap();
        let e = missing.token().unwrap_err();
        assert!(format!("{e:#}").contains("absent"), "{e:#}");
    }

    #[test]
    fn labels_name_ports_and_verdicts() {
        assert_eq!(port_label(&PortSpec::All), "all");
        assert_eq!(
            port_label(&PortSpec::Ranges(vec![(80, 80), (8000, 8100)])),
            "80,8000-8100"
        );
        assert_eq!(verdict_label("forwarded"), "tx");
        assert_eq!(verdict_label("icmp_too_big_sent"), "tx");
        assert_eq!(verdict_label("pass_not_vip"), "pass");
        assert_eq!(verdict_label("drop_no_service"), "drop");
        for r in ricochet_common::Reason::ALL {
            let v = verdict_label(r.name());
            assert!(
                r.name().starts_with(v) || (v == "tx" && !r.name().contains("drop")),
                "{}",
                r.name()
            );
        }
    }

    #[test]
    fn before_the_first_apply_only_the_engine_is_described() {
        let m = EngineMetrics::default();
        m.follow_controller(|| false);
        let text = m.encode();
        let parsed = ricochet_testkit::prometheus::parse(&text);
        let names: Vec<&str> = parsed
            .iter()
            .flat_map(|f| &f.samples)
            .map(|s| s.name.as_str())
            .collect();
        assert!(names.contains(&"ricochet_engine_attached"), "{text}");
        assert!(
            names.contains(&"ricochet_engine_controller_connected"),
            "{text}"
        );
        assert!(
            names.contains(&"ricochet_engine_apply_failures_total"),
            "{text}"
        );
        assert!(
            names.contains(&"ricochet_engine_apply_duration_seconds_count"),
            "{text}"
        );
        assert!(!names
            .iter()
            .any(|n| n.starts_with("ricochet_virtual_service")));
    }
}
