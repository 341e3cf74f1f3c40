//! Announcing the VIPs of the engine's service engine group over BGP, through the BIRD 2
//! daemon beside the engine (ARCHITECTURE.md, "Service engine groups" says why BIRD).
//!
//! The engine owns one file that BIRD's configuration includes: the host routes of the VIPs
//! it announces (a `static` protocol per family) and a `bgp` protocol per peer of the
//! group, exporting those routes only. When what should be announced changes, the engine
//! rewrites the file and tells BIRD to reread it (`configure` on its control socket);
//! BIRD restarts only the protocols whose text changed, so a VIP coming or going leaves
//! the sessions up and the router sees one update.
//!
//! A VIP is announced while the data plane is attached, the engine runs the newest
//! configuration it was given, the engine is not stopping, and some virtual service of
//! the VIP has a server that is enabled and not marked down by health monitoring. If the
//! engine dies, BIRD keeps announcing: the pinned data plane keeps forwarding with the
//! last configuration (a restarted engine adopts it and takes over). If the host dies,
//! the routers' BFD (when the group enables it) or hold timer removes its routes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ricochet_api::types::{BgpReport, BgpSession, BgpSessionState, VipAnnouncement};
use ricochet_config::{Desired, ServiceEngineGroup};
use tracing::{error, info, warn};

use crate::bird::Bird;
use crate::health::DownServers;

/// Where Debian's BIRD 2 listens by default.
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
/// The include file's name in the state directory, by default.
pub const INCLUDE_FILE: &str = "bird.conf";

/// How often the sessions are read (and a failed write retried).
const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where the engine talks to BIRD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpOptions {
    /// BIRD's control socket.
    pub bird_socket: PathBuf,
    /// The file BIRD's configuration includes, written by the engine.
    pub include_file: PathBuf,
    /// On a clean stop: how long to keep running after the withdrawal, so the routers
    /// have moved the traffic to the other engines when the stop returns.
    pub drain: Duration,
}

/// What the announcement depends on, from the runner.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The engine's registered name.
    pub engine: &'a str,
    /// Its group, in the configuration that runs.
    pub group: Option<&'a ServiceEngineGroup>,
    /// Whether the data plane forwards.
    pub attached: bool,
    /// Why the newest configuration does not run, if it does not.
    pub refusal: Option<&'a str>,
    /// The engine is stopping: everything is withdrawn.
    pub stopping: bool,
    /// The virtual services that run (the group's).
    pub desired: &'a Desired,
    /// Servers health monitoring marked down.
    pub down: &'a DownServers,
    /// The addresses on the engine's interface.
    pub interface_addrs: &'a [IpAddr],
}

/// What to tell BIRD, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The include file's text.
    pub text: String,
    /// Each VIP, announced or not, and why.
    pub vips: Vec<VipAnnouncement>,
    /// A reason no session can be configured (the engine's address is not on its
    /// interface), with the fix.
    pub error: Option<String>,
}

/// Decides what the engine announces (pure: tested without BIRD).
pub fn plan(inputs: &Inputs) -> Option<Plan> {
    let group = inputs.group?;
    let bgp = group.bgp.as_ref()?;
    let mut error = None;
    let member = group.engines.iter().find(|e| e.name == inputs.engine);
    let missing: Vec<IpAddr> = member
        .map(|m| {
            m.addresses
                .iter()
                .copied()
                .filter(|a| !inputs.interface_addrs.contains(a))
                .collect()
        })
        .unwrap_or_default();
    if !missing.is_empty() {
        error = Some(format!(
            "service engine group {:?} lists {} for engine {:?}, which its interface does \
             not have (it has {}): nothing is announced; correct the group's addresses or \
             the engine's --name",
            group.name,
            join(&missing),
            inputs.engine,
            join(inputs.interface_addrs),
        ));
    }

    // Per VIP: the virtual services and their usable servers.
    let mut by_vip: BTreeMap<IpAddr, Vec<(&str, usize, usize)>> = BTreeMap::new();
    for svc in &inputs.desired.services {
        let (healthy, all) = inputs
            .desired
            .pool(&svc.pool)
            .map(|p| {
                let healthy = p
                    .servers
                    .iter()
                    .filter(|s| s.enabled && !inputs.down.contains(&(p.name.clone(), s.ip)))
                    .count();
                (healthy, p.servers.len())
            })
            .unwrap_or((0, 0));
        let entry = by_vip.entry(svc.vip).or_default();
        if !entry.iter().any(|(n, _, _)| *n == svc.name) {
            entry.push((svc.name.as_str(), healthy, all));
        }
    }
    let held_back = if inputs.stopping {
        Some("the engine is stopping (withdrawn to drain)".to_owned())
    } else if !inputs.attached {
        Some("the data plane is not attached yet".to_owned())
    } else if let Some(r) = inputs.refusal {
        Some(format!(
            "the engine does not run the newest configuration ({r})"
        ))
    } else if error.is_some() {
        Some("the engine's address is not on its interface".to_owned())
    } else {
        None
    };
    let vips: Vec<VipAnnouncement> = by_vip
        .into_iter()
        .map(|(vip, services)| {
            let serving: Vec<String> = services
                .iter()
                .filter(|(_, healthy, _)| *healthy > 0)
                .map(|(name, healthy, all)| format!("{name} ({healthy} of {all} servers up)"))
                .collect();
            let (announced, reason) = match (&held_back, serving.is_empty()) {
                (Some(why), _) => (false, why.clone()),
                (None, false) => (true, format!("serving: {}", serving.join(", "))),
                (None, true) => (
                    false,
                    format!(
                        "no server is up in virtual service {}",
                        services
                            .iter()
                            .map(|(n, _, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            };
            VipAnnouncement {
                vip,
                announced,
                reason,
            }
        })
        .collect();

    let mut text = format!(
        "# Written by the ricochet engine {:?} for service engine group {:?}; rewritten on \
         every change.\n",
        inputs.engine, group.name
    );
    let announced = |v6: bool| {
        vips.iter()
            .filter(move |v| v.announced && v.vip.is_ipv6() == v6)
            .map(|v| v.vip)
    };
    for (family, v6, len) in [("ipv4", false, 32), ("ipv6", true, 128)] {
        let _ = writeln!(
            text,
            "protocol static ricochet_vips_{family} {{\n  {family};"
        );
        for vip in announced(v6) {
            let _ = writeln!(text, "  route {vip}/{len} blackhole;");
        }
        text.push_str("}\n");
    }
    if error.is_none() {
        if bgp.bfd {
            let _ = writeln!(
                text,
                "protocol bfd ricochet_bfd {{\n  interface \"*\" {{ min rx interval {i} ms; \
                 min tx interval {i} ms; multiplier 3; }};\n}}",
                i = bgp.bfd_interval_ms
            );
        }
        for peer in &bgp.peers {
            let Some(local) = member.and_then(|m| {
                m.addresses
                    .iter()
                    .find(|a| a.is_ipv6() == peer.ip.is_ipv6())
            }) else {
                continue;
            };
            let family = if peer.ip.is_ipv6() { "ipv6" } else { "ipv4" };
            let _ = writeln!(
                text,
                "protocol bgp {name} {{\n  description \"service engine group {group}\";\n  \
                 local {local} as {local_as};\n  neighbor {peer} as {remote_as};\n  \
                 hold time {hold};\n  keepalive time {keepalive};\n  connect retry time 5;\n  \
                 error wait time 1, 10;{bfd}\n  {family} {{ import none; export where proto = \
                 \"ricochet_vips_{family}\"; next hop self; }};\n}}",
                name = protocol_name(peer.ip),
                group = group.name,
                peer = peer.ip,
                local_as = bgp.local_as,
                remote_as = peer.remote_as,
                hold = bgp.hold_time,
                keepalive = (bgp.hold_time / 3).max(1),
                bfd = if bgp.bfd { "\n  bfd on;" } else { "" },
            );
        }
    }
    Some(Plan { text, vips, error })
}

/// BIRD's protocol name of the session to `peer`.
pub fn protocol_name(peer: IpAddr) -> String {
    let mut name = String::from("ricochet_peer_");
    name.extend(
        peer.to_string()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    name
}

/// The include file for an engine that announces nothing: no routes, no sessions.
pub fn empty_text(why: &str) -> String {
    format!("# Written by the ricochet engine: {why}; nothing is announced.\n")
}

/// Withdraws everything an engine announced (`ricochet detach`): its include file
/// emptied, BIRD reconfigured.
pub fn withdraw_through(socket: &Path, include_file: &Path) -> anyhow::Result<()> {
    write_include(include_file, &empty_text("the data plane was detached"))?;
    Bird::connect(socket)?.configure()
}

/// The engine's side of the announcement: what it wrote, what BIRD said.
pub struct Announcer {
    options: BgpOptions,
    /// The include file's text BIRD has read (configured); `None`: not yet, or unknown.
    configured: Option<String>,
    last_check: Option<Instant>,
    report: Option<BgpReport>,
    /// The announcements of the last report, to log changes.
    logged: BTreeMap<IpAddr, bool>,
    last_error: Option<String>,
    /// Whether an earlier run's file was looked for.
    stale_checked: bool,
}

impl Announcer {
    pub fn new(options: BgpOptions) -> Self {
        Announcer {
            options,
            configured: None,
            last_check: None,
            report: None,
            logged: BTreeMap::new(),
            last_error: None,
            stale_checked: false,
        }
    }

    pub fn options(&self) -> &BgpOptions {
        &self.options
    }

    /// The last report; `None` when the engine is in no group that announces.
    pub fn report(&self) -> Option<&BgpReport> {
        self.report.as_ref()
    }

    /// Brings BIRD in line with `inputs`: at once when what to announce changed,
    /// otherwise every second (the sessions' state). Whether the report changed.
    pub fn turn(&mut self, inputs: &Inputs) -> bool {
        let Some(plan) = plan(inputs) else {
            // Not announcing: what this engine (it left its group, or the group's BGP
            // settings went) or an earlier run configured must go, once.
            let announcing = match &self.configured {
                Some(text) => text.contains("protocol "),
                // Read once: an engine in no group reads no file on every turn.
                None => !std::mem::replace(&mut self.stale_checked, true) && self.has_stale_file(),
            };
            if announcing {
                let text = empty_text("the engine is in no service engine group with BGP");
                match self.write_and_configure(&text) {
                    Ok(()) => info!(
                        "BGP: withdrew every VIP and session: this engine is in no service \
                         engine group with BGP"
                    ),
                    Err(e) => error!("BGP: withdrawing (no group with BGP any more): {e:#}"),
                }
            }
            let changed = self.report.is_some();
            self.report = None;
            return changed;
        };
        let text = plan.text.clone();
        let due = self.configured.as_deref() != Some(text.as_str())
            || self
                .last_check
                .is_none_or(|t| t.elapsed() >= CHECK_INTERVAL);
        if !due {
            return false;
        }
        self.last_check = Some(Instant::now());
        let mut error = plan.error.clone();
        let mut daemon = None;
        let mut sessions = Vec::new();
        let group = inputs.group.expect("a plan has a group");
        let peers = &group.bgp.as_ref().expect("a plan has BGP").peers;
        match self.sync(&text) {
            Ok((version, protocols)) => {
                daemon = Some(version);
                for peer in peers {
                    let name = protocol_name(peer.ip);
                    let row = protocols.iter().find(|p| p.name == name);
                    sessions.push(match row {
                        Some(p) => BgpSession {
                            peer: peer.ip,
                            state: session_state(&p.state, &p.info),
                            info: if p.info.is_empty() {
                                p.state.clone()
                            } else {
                                p.info.clone()
                            },
                            since: Some(p.since.clone()),
                        },
                        None => BgpSession {
                            peer: peer.ip,
                            state: BgpSessionState::Down,
                            info: "not configured (no address of its family for this engine)"
                                .to_owned(),
                            since: None,
                        },
                    });
                }
            }
            Err(e) => {
                let message = format!("{e:#}");
                error = Some(match error {
                    Some(first) => format!("{first}; {message}"),
                    None => message,
                });
                for peer in peers {
                    sessions.push(BgpSession {
                        peer: peer.ip,
                        state: BgpSessionState::Down,
                        info: "the BGP daemon does not answer".to_owned(),
                        since: None,
                    });
                }
            }
        }
        if error != self.last_error {
            match &error {
                Some(e) => error!("BGP: {e}"),
                None if self.last_error.is_some() => {
                    info!("BGP: resolved: the announcement is configured")
                }
                None => {}
            }
            self.last_error = error.clone();
        }
        for v in &plan.vips {
            if self.logged.get(&v.vip) != Some(&v.announced) {
                if v.announced {
                    info!(vip = %v.vip, "BGP: announcing {}: {}", v.vip, v.reason);
                } else {
                    warn!(vip = %v.vip, "BGP: withdrawing {}: {}", v.vip, v.reason);
                }
            }
        }
        self.logged = plan.vips.iter().map(|v| (v.vip, v.announced)).collect();
        let report = BgpReport {
            group: group.name.clone(),
            daemon,
            error,
            sessions,
            vips: plan.vips,
        };
        let changed = self.report.as_ref() != Some(&report);
        self.report = Some(report);
        changed
    }

    /// Withdraws everything now (a clean stop, before the drain wait).
    pub fn withdraw_all(&mut self, why: &str) -> anyhow::Result<()> {
        if self.configured.is_none() && !self.has_stale_file() && self.report.is_none() {
            return Ok(());
        }
        self.write_and_configure(&empty_text(why))
    }

    fn has_stale_file(&self) -> bool {
        std::fs::read_to_string(&self.options.include_file).is_ok_and(|t| t.contains("protocol "))
    }

    /// Writes `text` if BIRD has not read it yet, then reads the protocols. The file is
    /// written before BIRD is reached, so that a BIRD that is down starts with it.
    fn sync(&mut self, text: &str) -> anyhow::Result<(String, Vec<crate::bird::Protocol>)> {
        let fresh = self.configured.as_deref() != Some(text);
        if fresh {
            write_include(&self.options.include_file, text)?;
        }
        let mut bird = Bird::connect(&self.options.bird_socket)?;
        if fresh {
            bird.configure().map_err(|e| {
                self.configured = None;
                anyhow::anyhow!(
                    "{e}; the file is {} (fix the group's BGP settings)",
                    self.options.include_file.display()
                )
            })?;
            self.configured = Some(text.to_owned());
        }
        let protocols = bird.protocols()?;
        Ok((bird.version().to_owned(), protocols))
    }

    fn write_and_configure(&mut self, text: &str) -> anyhow::Result<()> {
        write_include(&self.options.include_file, text)?;
        self.configured = Some(text.to_owned());
        let mut bird = Bird::connect(&self.options.bird_socket)?;
        bird.configure()
    }
}

/// The session state from BIRD's protocol state and info.
fn session_state(state: &str, info: &str) -> BgpSessionState {
    match state {
        "up" if info.starts_with("Established") => BgpSessionState::Established,
        "start" | "up" => BgpSessionState::Connecting,
        _ => BgpSessionState::Down,
    }
}

/// Writes the include file whole (a temporary file renamed over it), so BIRD never reads
/// half of it.
pub fn write_include(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| anyhow::anyhow!("writing BIRD's include file in {}: {e}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    // Readable by BIRD, which Debian runs as the user `bird` (a temporary file is 0600).
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    tmp.persist(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn join(addrs: &[IpAddr]) -> String {
    if addrs.is_empty() {
        return "no address".to_owned();
    }
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
