//! `ricochet status`: what the engine runs (from its state file) with the live counters
//! (from the pinned maps), in the spirit of `ipvsadm -L -n --stats`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use ricochet_config::PortSpec;

use crate::daemon::{self, StateFile};

#[derive(Args, Debug)]
pub struct StatusArgs {
    #[arg(long, env = "RICOCHET_STATE_DIR", default_value = daemon::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `80,8000-8100`, or `all` for every port.
pub fn ports(p: &PortSpec, all: &str) -> String {
    match p {
        PortSpec::All => all.to_owned(),
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

/// The BGP announcement, as the engine last checked it.
fn print_bgp(bgp: &ricochet_api::types::BgpReport, engine_alive: bool) {
    println!(
        "BGP (service engine group {}, {}){}:",
        bgp.group,
        bgp.daemon
            .as_deref()
            .unwrap_or("the BGP daemon does not answer"),
        if engine_alive {
            ""
        } else {
            ", as last seen: the BGP daemon keeps announcing what the engine left"
        }
    );
    if let Some(e) = &bgp.error {
        println!("  ERROR: {e}");
    }
    for s in &bgp.sessions {
        println!(
            "  peer {:<39} {:<12} {}{}",
            s.peer,
            s.state.as_str(),
            s.info,
            s.since
                .as_deref()
                .map(|t| format!(" (since {t})"))
                .unwrap_or_default()
        );
    }
    for v in &bgp.vips {
        println!(
            "  {:<44} {:<12} {}",
            v.vip,
            if v.announced {
                "announced"
            } else {
                "withdrawn"
            },
            v.reason
        );
    }
}

fn addr(ip: std::net::IpAddr, port: &str) -> String {
    match ip {
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let path = daemon::state_file(&args.state_dir);
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (is the engine running with this --state-dir?)",
            path.display()
        )
    })?;
    let mut st: StateFile =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    let dp = daemon::open_pinned(&st.pin_dir)?;
    st.status.refresh_counters(&dp)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(ExitCode::SUCCESS);
    }
    let engine_alive = std::path::Path::new(&format!("/proc/{}", st.pid)).exists();
    println!(
        "Ricochet on {} (revision {}, engine pid {} {})",
        st.interface,
        st.status.revision,
        st.pid,
        if engine_alive {
            "running"
        } else {
            "not running: the data plane forwards with the last configuration"
        }
    );
    if !st.warnings.is_empty() {
        println!("WARNING: packets are being lost:");
        for w in &st.warnings {
            println!("  {} ({}): {}", w.interface, w.kind, w.what);
            println!("    to fix: {}", w.fix);
        }
    }
    match (&st.controller, st.controller_revision) {
        (Some(url), Some(revision)) => {
            println!("Following the controller at {url}: configuration revision {revision}")
        }
        (Some(url), None) => {
            println!("Following the controller at {url}: no configuration from it applied yet")
        }
        (None, _) => {}
    }
    if let Some(bgp) = &st.bgp {
        print_bgp(bgp, engine_alive);
    }
    println!(
        "{:<5} {:<32} {:<12} {:>10} {:>12} {:>10}  Virtual service / pool",
        "Prot", "LocalAddress:Port", "Hash", "Packets", "Bytes", "NewFlows"
    );
    println!(
        "  -> {:<39} {:<7} {:>10} {:>12} {:>10}  State",
        "RemoteAddress (encap. target)", "Weight", "Packets", "Bytes", "NewFlows"
    );
    for s in &st.status.services {
        let c = s.counters;
        let hash = match s.hash {
            ricochet_config::HashMode::SourceIp => "sip",
            ricochet_config::HashMode::SourceIpAndPort => "sip+port",
        };
        println!(
            "{:<5} {:<32} {:<12} {:>10} {:>12} {:>10}  {} / {} ({})",
            s.protocol.to_string(),
            addr(s.vip, &ports(&s.ports, "*")),
            hash,
            c.packets,
            c.bytes,
            c.new_flows,
            s.name,
            s.pool,
            s.encapsulation
        );
        if let Some(pool) = st.status.pools.iter().find(|p| p.name == s.pool) {
            // Servers marked down are out of the data plane's pool: list them from the
            // health report, with the reason.
            for srv in &pool.servers {
                let c = srv.counters;
                let health = st
                    .health
                    .iter()
                    .find(|h| h.pool == pool.name && h.ip == srv.ip);
                println!(
                    "  -> {:<39} {:<7} {:>10} {:>12} {:>10}  {}{}",
                    srv.ip.to_string(),
                    srv.ratio,
                    c.packets,
                    c.bytes,
                    c.new_flows,
                    srv.state,
                    health.map_or(String::new(), |h| format!(", health {}", h.state.as_str()))
                );
            }
            for h in st
                .health
                .iter()
                .filter(|h| h.pool == pool.name && !pool.servers.iter().any(|srv| srv.ip == h.ip))
            {
                println!(
                    "  -> {:<39} {:<7} {:>10} {:>12} {:>10}  out of the pool, health {}: {}",
                    h.ip.to_string(),
                    "-",
                    "-",
                    "-",
                    "-",
                    h.state.as_str(),
                    h.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    print_flow_table_use(&st.status.services);
    let down: Vec<_> = st
        .health
        .iter()
        .filter(|h| h.state == ricochet_controller::types::HealthState::Down)
        .collect();
    if !down.is_empty() {
        println!("Servers down (health monitors):");
        for h in down {
            println!(
                "  {} in {} since {}: {}",
                h.ip,
                h.pool,
                h.since.as_deref().unwrap_or("-"),
                h.reason.as_deref().unwrap_or("")
            );
        }
    }
    println!("Packets by verdict:");
    for (name, n) in st.status.reasons.iter().filter(|(_, n)| *n > 0) {
        println!("  {name:<28} {n}");
    }
    println!("Flows in the flow table: {}", dp.flow_count());
    match &st.status.flows {
        Some(c) => println!(
            "  at the engine's last count ({} s ago, {} ms): {} entries, {} live (seen within \
             the idle timeout)",
            now_unix().saturating_sub(c.counted_unix),
            c.scan_ms,
            c.entries,
            c.live
        ),
        None => println!("  not counted by the engine yet"),
    }
    for (event, n) in ricochet_dataplane::Dataplane::event_counters(&dp)? {
        if event == ricochet_common::Event::FlowMissNonSyn {
            // Always shown: a rising count means flows were reshuffled (another load
            // balancer took over their clients, or the table evicted them), or, while
            // no flow table is consulted, 1 in 16 of the packets of unknown flows (a
            // spoofed ACK flood's, say).
            println!(
                "Non-SYN TCP packets that looked their flow up and missed (hashed and \
                 recorded again; every packet of a consulted service looks up, 1 in {} of \
                 the others): {n}",
                ricochet_common::limits::FLOW_SAMPLE
            );
        } else if n > 0 {
            println!("Event {}: {n}", event.name());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Per service: whether established TCP packets look their flow up, and why.
fn print_flow_table_use(services: &[ricochet_engine::status::ServiceStatus]) {
    let now = now_unix();
    let ago = |t: Option<u64>| {
        t.map_or_else(
            || "?".to_owned(),
            |t| format!("{} s ago", now.saturating_sub(t)),
        )
    };
    println!("Flow table consulted by established packets:");
    for s in services {
        let f = &s.flow_table;
        let line = if s.protocol == ricochet_config::Protocol::Udp {
            "always (UDP: no SYN marks a new flow)".to_owned()
        } else if !f.consulted {
            format!(
                "no: the Maglev pick (no live flow disagrees with the table; 1 in {} looks up)",
                ricochet_common::limits::FLOW_SAMPLE
            )
        } else {
            let why = f.reason.map_or("the flag is set in the maps", |r| r.text());
            let scan = match f.disagreeing {
                Some(n) => format!(
                    "last scan {}: {n} live flows recorded on another server than the table picks",
                    ago(f.scanned_unix)
                ),
                None => "not scanned yet".to_owned(),
            };
            format!("yes, since {} ({why}); {scan}", ago(f.since_unix))
        };
        let live = s
            .live_flows
            .map_or_else(String::new, |n| format!(" [{n} live flows]"));
        println!("  {:<32} {line}{live}", s.name);
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
