//! A service engine group of two engines behind ECMP on the seed's network: se1
//! (192.168.33.7, fc00::7) and se2 (192.168.33.8, fc00::8) each run `ricochet engine` (file
//! mode, `--name se1`/`se2`) and BIRD 2; the router runs BIRD 2 too, peering with both over
//! IPv4 and IPv6 with BFD, and installs the VIP routes it learns as one ECMP route hashed
//! on the 5-tuple. The seed's static VIP routes are removed: the routes come from BGP
//! only. Shared by `crates/cli/tests/group_e2e.rs` and the bench's scale-out section.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bird::{self, Bird, Neighbour, ENGINES_AS, ROUTER_AS};
use crate::keepalive::{get_new, Conn};
use crate::{Host, Process, SeedBed, VIP_V4, VIP_V6};

/// The members' names, in the order of [`GroupBed::members`].
pub const MEMBERS: [&str; 2] = ["se1", "se2"];

/// The group's configuration: the seed's web service over IPv4 (and over IPv6 if `v6`) in
/// group g1, a TCP monitor that marks a server down after 2 failed checks 2 s apart, a 3 s
/// hold time, and BFD at 100 ms if `bfd` (the bed's router must then run it too: see
/// [`GroupBed::new`]).
pub fn group_config(v6: bool, bfd: bool) -> String {
    let v6_vs = if v6 {
        format!(
            "  - {{ name: web-vs-v6, vip: '{VIP_V6}', services: [{{ port: 80 }}], network_profile: dsr-l3-tcp, pool: web-pool-v6, se_group: g1 }}\n"
        )
    } else {
        String::new()
    };
    format!(
        "network_profiles:
  - {{ name: dsr-l3-tcp, type: tcp_fast_path, dsr: {{ enabled: true, type: l3, encapsulation: ipinip }} }}
health_monitors:
  - {{ name: web-tcp, type: tcp, send_interval: 2, receive_timeout: 1, successful_checks: 1, failed_checks: 2 }}
pools:
  - {{ name: web-pool, consistent_hash: source_ip_and_port, servers: [{{ ip: 192.168.33.10 }}, {{ ip: 192.168.34.10 }}], health_monitors: [web-tcp] }}
  - {{ name: web-pool-v6, servers: [{{ ip: 'fc00::10' }}, {{ ip: 'fc00:34::10' }}], health_monitors: [web-tcp] }}
service_engine_groups:
  - name: g1
    engines:
      - {{ name: se1, addresses: [192.168.33.7, 'fc00::7'] }}
      - {{ name: se2, addresses: [192.168.33.8, 'fc00::8'] }}
    bgp:
      local_as: {ENGINES_AS}
      peers: [{{ ip: 192.168.33.1, remote_as: {ROUTER_AS} }}, {{ ip: 'fc00::1', remote_as: {ROUTER_AS} }}]
      hold_time: 3
      bfd: {bfd}
      bfd_interval_ms: 100
virtual_services:
  - {{ name: web-vs, vip: {VIP_V4}, services: [{{ port: 80 }}], network_profile: dsr-l3-tcp, pool: web-pool, se_group: g1 }}
{v6_vs}"
    )
}

/// One engine host: its BIRD and its engine (behind locks, so that a change can be made
/// while other threads use the bed).
#[derive(Debug)]
pub struct Member {
    pub name: &'static str,
    pub bird: Mutex<Option<Bird>>,
    pub engine: Mutex<Option<Process>>,
}

/// The seed bed with both engines in one group behind the router's BGP (see the module).
#[derive(Debug)]
pub struct GroupBed {
    pub members: [Member; 2],
    /// `ricochet controller` in the router's namespace, when the engines follow one.
    pub controller: Mutex<Option<Process>>,
    pub router: Bird,
    pub bed: SeedBed,
    ricochet: String,
}

/// The controller's address in the router's namespace (on the engines' segment).
pub const CONTROLLER: &str = "192.168.33.1:8480";

/// What happened to connections while the router moved traffic off an engine.
#[derive(Debug, Clone)]
pub struct UnderLoad {
    /// Until the router's route had changed, from the start of the action.
    pub converged: Duration,
    /// Keep-alive connections whose GET after the change failed, with the error.
    pub broken: Vec<String>,
    /// Keep-alive connections open through the change.
    pub connections: usize,
    /// New connections tried and failed while it happened.
    pub new_tried: usize,
    pub new_failed: usize,
}

impl GroupBed {
    /// Builds the bed (servers set up for both VIPs), writes `config` as the engines'
    /// file, starts the router's BIRD (with BFD on its sessions if `bfd`, which `config`
    /// must match), then each member's BIRD and engine (following the file).
    pub fn new(ricochet: &str, tag: &str, config: &str, bfd: bool) -> Result<GroupBed> {
        Self::build(ricochet, tag, config, bfd, false)
    }

    /// As [`GroupBed::new`], but the engines follow `ricochet controller` (in the router's
    /// namespace at [`CONTROLLER`]), to which `config` is applied with `ricochet apply`.
    pub fn with_controller(ricochet: &str, tag: &str, config: &str, bfd: bool) -> Result<GroupBed> {
        Self::build(ricochet, tag, config, bfd, true)
    }

    fn build(
        ricochet: &str,
        tag: &str,
        config: &str,
        bfd: bool,
        controlled: bool,
    ) -> Result<GroupBed> {
        let bed = SeedBed::new(ricochet, tag, &[VIP_V4.into(), VIP_V6.into()])?;
        let topo = &bed.topo;
        topo.unroute_vip(VIP_V4.into())?;
        topo.unroute_vip(VIP_V6.into())?;
        topo.router.ns.set_sysctls(&[
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
        ])?;
        let mut neighbours = Vec::new();
        for v6 in [false, true] {
            for (name, host) in MEMBERS.iter().zip([&topo.se1, &topo.se2]) {
                neighbours.push(Neighbour {
                    name,
                    ip: host.addr(v6),
                });
            }
        }
        let router = Bird::start(
            &topo.router.ns,
            bed.dir(),
            "router-bird",
            &bird::router_config(
                topo.router.lan_v4.into(),
                topo.router.lan_v4.into(),
                topo.router.lan_v6.into(),
                &neighbours,
                3,
                bfd.then_some(100),
            ),
        )?;
        let group = GroupBed {
            members: MEMBERS.map(|name| Member {
                name,
                bird: Mutex::new(None),
                engine: Mutex::new(None),
            }),
            controller: Mutex::new(None),
            router,
            bed,
            ricochet: ricochet.to_owned(),
        };
        group.write_config(config)?;
        if controlled {
            let state = group.bed.path("controller");
            let mut c = group.bed.topo.router.ns.spawn(&[
                ricochet,
                "controller",
                "--listen",
                CONTROLLER,
                "--allow-plain-http",
                "--state-dir",
                &state,
            ])?;
            c.wait_for_output("controller listening on")
                .with_context(|| c.report())?;
            *lock(&group.controller) = Some(c);
            let file = group.bed.path("group.yaml");
            group.cli(&["apply", "-f", &file, "--yes"])?;
        }
        for i in 0..2 {
            group.start_bird(i)?;
            group.start_engine(i)?;
        }
        Ok(group)
    }

    /// Runs the CLI against the controller (in the router's namespace); its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let url = format!("http://{CONTROLLER}");
        let token = self.bed.path("controller/admin-token");
        let mut full = vec![self.ricochet.as_str()];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--url", &url, "--token-file", &token]);
        let out = self.bed.topo.router.ns.output(&full)?;
        anyhow::ensure!(
            out.status.success(),
            "ricochet {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Rewrites the engines' configuration file (they apply it within their watch interval).
    pub fn write_config(&self, text: &str) -> Result<()> {
        std::fs::write(self.bed.dir().join("group.yaml"), text).context("writing group.yaml")
    }

    pub fn host(&self, i: usize) -> &Host {
        [&self.bed.topo.se1, &self.bed.topo.se2][i]
    }

    fn include(&self, i: usize) -> PathBuf {
        self.bed
            .dir()
            .join(format!("{}-include.conf", self.members[i].name))
    }

    /// Member `i`'s state directory.
    pub fn state(&self, i: usize) -> String {
        self.bed.path(&format!("{}-state", self.members[i].name))
    }

    fn bird_socket(&self, i: usize) -> String {
        self.bed.path(&format!("{}-bird.ctl", self.members[i].name))
    }

    /// Starts member `i`'s BIRD (its engine's file included).
    pub fn start_bird(&self, i: usize) -> Result<()> {
        let host = self.host(i);
        let conf = bird::engine_config(host.ipv4.into(), &self.include(i))?;
        let b = Bird::start(
            &host.ns,
            self.bed.dir(),
            &format!("{}-bird", self.members[i].name),
            &conf,
        )?;
        *lock(&self.members[i].bird) = Some(b);
        Ok(())
    }

    /// Starts member `i`'s engine (adopting its pinned data plane if one is left); waits
    /// until it runs.
    pub fn start_engine(&self, i: usize) -> Result<()> {
        let host = self.host(i);
        let pins = self.bed.pin_dir(self.members[i].name);
        let (config, state, socket, include) = (
            self.bed.path("group.yaml"),
            self.state(i),
            self.bird_socket(i),
            self.include(i).to_string_lossy().into_owned(),
        );
        let (url, token) = (
            format!("http://{CONTROLLER}"),
            self.bed.path("controller/admin-token"),
        );
        let source: Vec<&str> = if lock(&self.controller).is_some() {
            vec!["--controller", &url, "--token-file", &token]
        } else {
            vec!["--config", &config, "--watch-interval-ms", "100"]
        };
        let mut args = vec![self.ricochet.as_str(), "engine"];
        args.extend(source);
        args.extend_from_slice(&[
            "--name",
            self.members[i].name,
            "--interface",
            host.iface,
            "--pin-dir",
            pins.to_str().context("pin path")?,
            "--state-dir",
            &state,
            "--flows",
            "65536",
            "--bird-socket",
            &socket,
            "--bgp-include-file",
            &include,
            "--bgp-drain-time",
            "1",
        ]);
        let mut p = host.ns.spawn(&args)?;
        p.wait_for_output("engine running")
            .with_context(|| p.report())?;
        *lock(&self.members[i].engine) = Some(p);
        Ok(())
    }

    /// The router's next hops for `vip`, sorted (empty: no route).
    pub fn next_hops(&self, vip: IpAddr) -> Result<Vec<IpAddr>> {
        let family = if vip.is_ipv4() { "-4" } else { "-6" };
        let out =
            self.bed
                .topo
                .router
                .ns
                .output(&["ip", family, "route", "show", &vip.to_string()])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut hops: Vec<IpAddr> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| w[1].parse().ok())
            .collect();
        hops.sort();
        Ok(hops)
    }

    /// Waits until the router routes `vip` over exactly `want`; how long that took.
    pub fn wait_for_hops(
        &self,
        vip: IpAddr,
        want: &[IpAddr],
        within: Duration,
    ) -> Result<Duration> {
        let t = Instant::now();
        let mut want = want.to_vec();
        want.sort();
        loop {
            let hops = self.next_hops(vip)?;
            if hops == want {
                return Ok(t.elapsed());
            }
            if t.elapsed() >= within {
                anyhow::bail!(
                    "the router routes {vip} via {hops:?}, not {want:?}, after {within:?}\n\
                     router:\n{}\n{}",
                    self.router
                        .birdc(&["show", "protocols"])
                        .unwrap_or_default(),
                    self.reports()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the router's four BGP sessions (each member, IPv4 and IPv6) are
    /// established; how long that took.
    pub fn wait_for_sessions(&self, within: Duration) -> Result<Duration> {
        let t = Instant::now();
        loop {
            let protocols = self.router.birdc(&["show", "protocols"])?;
            let up = protocols
                .lines()
                .filter(|l| l.contains(" BGP ") && l.contains("Established"))
                .count();
            if up == 4 {
                return Ok(t.elapsed());
            }
            if t.elapsed() >= within {
                anyhow::bail!(
                    "{up} of the router's 4 BGP sessions are established after {within:?}:\n\
                     {protocols}\n{}",
                    self.reports()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The members' logs, for failure messages.
    pub fn reports(&self) -> String {
        let mut s = String::new();
        for m in &self.members {
            if let Some(e) = lock(&m.engine).as_ref() {
                s.push_str(&format!("--- {}:\n{}\n", m.name, e.report()));
            }
        }
        s
    }

    /// `ricochet status` (`--json` if `json`) of member `i`.
    pub fn status(&self, i: usize, json: bool) -> Result<String> {
        let state = self.state(i);
        let mut args = vec![self.ricochet.as_str(), "status", "--state-dir", &state];
        if json {
            args.push("--json");
        }
        let out = self.host(i).ns.output(&args)?;
        anyhow::ensure!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// Packets member `i` forwarded for `service`.
    pub fn packets(&self, i: usize, service: &str) -> Result<u64> {
        let v: serde_json::Value = serde_json::from_str(&self.status(i, true)?)?;
        Ok(v["status"]["services"]
            .as_array()
            .context("no services in the status")?
            .iter()
            .filter(|s| s["name"] == service)
            .filter_map(|s| s["counters"]["packets"].as_u64())
            .sum())
    }

    /// Both members' addresses of a family, sorted.
    pub fn engine_ips(&self, v6: bool) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = (0..2).map(|i| self.host(i).addr(v6)).collect();
        ips.sort();
        ips
    }

    /// Member `i` dies as a host does: its link down (its addresses kept for a return),
    /// its BIRD and engine killed; until the router routes `vip` over the other member
    /// only.
    pub fn fail_host(&self, i: usize, vip: IpAddr) -> Result<Duration> {
        let killed = Instant::now();
        let host = self.host(i);
        host.ns.set_sysctls(&[(
            &format!("net.ipv6.conf.{}.keep_addr_on_down", host.iface),
            "1",
        )])?;
        host.ns.ip(&["link", "set", host.iface, "down"])?;
        if let Some(mut b) = lock(&self.members[i].bird).take() {
            b.process.kill()?;
        }
        if let Some(mut e) = lock(&self.members[i].engine).take() {
            e.kill()?;
        }
        self.wait_for_hops(
            vip,
            &[self.host(1 - i).addr(vip.is_ipv6())],
            Duration::from_secs(10),
        )?;
        Ok(killed.elapsed())
    }

    /// Brings member `i`'s link back up.
    pub fn restore_link(&self, i: usize) -> Result<()> {
        let host = self.host(i);
        host.ns.ip(&["link", "set", host.iface, "up"]).map(drop)
    }

    /// A clean stop of member `i`'s engine (SIGTERM: withdraw, drain, exit); until the
    /// router routes `vip` over the other member only. Fails if the engine does not exit
    /// cleanly within 10 s or the route had not changed when it exited.
    pub fn drain(&self, i: usize, vip: IpAddr) -> Result<Duration> {
        let mut engine = lock(&self.members[i].engine)
            .take()
            .context("no engine to drain")?;
        let t = Instant::now();
        engine.signal(libc::SIGTERM)?;
        let other = [self.host(1 - i).addr(vip.is_ipv6())];
        let converged = self.wait_for_hops(vip, &other, Duration::from_secs(10))?;
        let status = engine
            .wait_timeout(Duration::from_secs(10))?
            .with_context(|| format!("no exit 10 s after SIGTERM:\n{}", engine.report()))?;
        anyhow::ensure!(status.success(), "{status}: {}", engine.report());
        anyhow::ensure!(
            engine
                .stderr()
                .contains("BGP: VIPs withdrawn; draining for 1 s")
                && t.elapsed() >= Duration::from_secs(1),
            "the engine did not drain:\n{}",
            engine.report()
        );
        Ok(converged)
    }

    /// Opens `n` keep-alive connections to `vip` (a GET on each), runs `act` (which moves
    /// the router's traffic and answers how long that took) while a thread opens a new
    /// connection every 20 ms, then sends a GET on every connection again.
    pub fn under_load(
        &self,
        vip: IpAddr,
        n: usize,
        act: impl FnOnce(&GroupBed) -> Result<Duration>,
    ) -> Result<UnderLoad> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let c = self
                .bed
                .topo
                .client
                .ns
                .run(move || Conn::open(vip))?
                .context("connecting to the VIP before the change")?;
            conns.push(c);
        }
        let mut first = BTreeMap::new();
        for c in &mut conns {
            let body = c.get().context("GET before the change")?;
            *first.entry(body).or_insert(0usize) += 1;
        }
        let stop = AtomicBool::new(false);
        let (tried, failed) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let topo = &self.bed.topo;
        let converged = std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    tried.fetch_add(1, Ordering::Relaxed);
                    if get_new(topo, vip).is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            std::thread::sleep(Duration::from_millis(500));
            let converged = act(self);
            std::thread::sleep(Duration::from_secs(2));
            stop.store(true, Ordering::Relaxed);
            converged
        })?;
        let mut broken = Vec::new();
        for (i, c) in conns.iter_mut().enumerate() {
            if let Err(e) = c.get() {
                broken.push(format!("connection {i}: {e}"));
            }
        }
        Ok(UnderLoad {
            converged,
            broken,
            connections: n,
            new_tried: tried.load(Ordering::Relaxed),
            new_failed: failed.load(Ordering::Relaxed),
        })
    }
}

/// The lock's value, also after a panic elsewhere (the processes stay killable).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
