//! The Ricochet demo: the seed's scenario ("AVI: L3 Direct Server Return") end to end,
//! with Ricochet in the place of Avi.
//!
//! Started by `cargo xtask demo`, which builds the `ricochet` binary and passes its path.
//! It builds the seed's network in namespaces, starts nginx on web01 and web02, makes
//! both DSR-ready with `ricochet server setup`, configures Ricochet the way the seed
//! configures Avi (a TCP fast-path network profile with DSR L3 IP-in-IP, a virtual
//! service on the VIP, a pool of the servers' own addresses), runs curl from the client
//! and narrates what happened from real packet captures. Everything is removed at the
//! end, also on failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use ricochet_testbed::{self as tb, Capture, SeedBed};

const USAGE: &str = "usage: ricochet-demo --ricochet PATH";

/// The seed's Avi configuration in Ricochet's file format: Templates > Profiles >
/// TCP/UDP (TCP fast path, DSR L3, ipinip), Applications > Virtual Services (the VIP,
/// System-L4-Application, the profile, the pool), and the pool of servers by their own
/// IP. The IPv6 twin uses the seed's IPv6 addresses (L3 DSR for IPv6).
const CONFIG: &str = "\
network_profiles:
  - name: dsr-l3-tcp
    type: tcp_fast_path
    dsr: { enabled: true, type: l3, encapsulation: ipinip }
pools:
  - name: web-pool
    consistent_hash: source_ip_and_port
    servers:
      - { ip: 192.168.33.10 }
      - { ip: 192.168.34.10 }
  - name: web-pool-v6
    consistent_hash: source_ip_and_port
    servers:
      - { ip: 'fc00::10' }
      - { ip: 'fc00:34::10' }
virtual_services:
  - name: web-vs
    vip: 192.168.35.241
    services: [{ port: 80 }]
    application_profile: System-L4-Application
    network_profile: dsr-l3-tcp
    pool: web-pool
  - name: web-vs-v6
    vip: 'fc00:3::24a'
    services: [{ port: 80 }]
    application_profile: System-L4-Application
    network_profile: dsr-l3-tcp
    pool: web-pool-v6
";

/// Parses `--ricochet PATH` (or `--ricochet=PATH`).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<PathBuf, String> {
    let mut ricochet = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--ricochet" {
            let path = args.next().ok_or("--ricochet needs a PATH")?;
            ricochet = Some(PathBuf::from(path));
        } else if let Some(path) = arg.strip_prefix("--ricochet=") {
            ricochet = Some(PathBuf::from(path));
        } else if arg == "-h" || arg == "--help" {
            return Err(USAGE.to_owned());
        } else {
            return Err(format!("unexpected argument `{arg}`\n{USAGE}"));
        }
    }
    ricochet.ok_or_else(|| format!("missing --ricochet PATH\n{USAGE}"))
}

fn step(n: u32, text: &str) {
    println!("\n== Step {n}: {text}");
}

fn run_ok(ns: &tb::Netns, args: &[&str]) -> Result<String> {
    let out = ns.output(args)?;
    if !out.status.success() {
        bail!(
            "`{}` in {} failed:\n{}",
            args.join(" "),
            ns.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first captured packet line containing every needle.
fn find<'a>(lines: &'a [String], needles: &[&str]) -> Option<&'a str> {
    lines
        .iter()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .map(|l| {
            // Drop the link-layer prefix that `tcpdump -e` prints before the IP part.
            let l = l.as_str();
            l.find(": ").map_or(l, |i| &l[i + 2..])
        })
}

fn demo(ricochet: &Path) -> Result<()> {
    tb::require_root()?;
    let ricochet = ricochet
        .to_str()
        .context("the ricochet path is not UTF-8")?;
    println!("Ricochet demo: the seed's L3 DSR scenario, with Ricochet in the place of Avi.");

    step(1, "build the seed's network in namespaces");
    let mut bed = SeedBed::new(ricochet, "demo", &[tb::VIP_V4.into(), tb::VIP_V6.into()])?;
    let topo = &bed.topo;
    for h in topo.hosts() {
        println!("  {:<7} {:<15} {}", h.name, h.ipv4, h.ipv6);
    }
    println!("  router  192.168.11.1 | 192.168.33.1 | 192.168.34.1 (uRPF off); VIP 192.168.35.241 and fc00:3::24a routed to se1");
    let dir = bed.dir();
    let se_pins = bed.pin_dir("se1");

    step(2, "configure the servers (the seed's sysctl.conf and netplan, done by `ricochet server setup`)");
    for (host, out) in [&topo.web01, &topo.web02]
        .into_iter()
        .zip(&bed.setup_output)
    {
        println!(
            "  {}: {}",
            host.name,
            out.lines().last().unwrap_or("set up").trim()
        );
        let pin = bed.pin_dir(host.name);
        let check = [
            ricochet,
            "server",
            "check",
            "--vip",
            "192.168.35.241",
            "--vip",
            "fc00:3::24a",
            "--interface",
            host.iface,
            "--pin-dir",
            pin.to_str().context("pin path")?,
        ];
        run_ok(&host.ns, &check).with_context(|| format!("{} is not DSR-ready", host.name))?;
        println!(
            "  {}: nginx serving \"{}\" on port 80",
            host.name, host.name
        );
    }

    step(3, "configure Ricochet as the seed configures Avi");
    let config = dir.join("ricochet.yaml");
    std::fs::write(&config, CONFIG)?;
    println!("  network profile dsr-l3-tcp: TCP fast path, DSR type L3, encapsulation ipinip");
    println!(
        "  virtual service web-vs: VIP 192.168.35.241:80, System-L4-Application, pool web-pool"
    );
    println!(
        "  pool web-pool: 192.168.33.10 (web01), 192.168.34.10 (web02), servers by their own IP"
    );
    print!(
        "{}",
        run_ok(
            &topo.se1.ns,
            &[ricochet, "check-config", config.to_str().context("path")?]
        )?
    );

    step(4, "start the service engine on se1 (XDP on its eth0)");
    let encap = Capture::start(
        &topo.router.ns,
        topo.se1.router_port,
        "ip proto 4 or ip6 proto 41",
    )?;
    let through_se = Capture::start(
        &topo.se1.ns,
        topo.se1.iface,
        "(ip and src host 192.168.35.241) or (ip6 and src host fc00:3::24a)",
    )?;
    let at_client = Capture::start(&topo.client.ns, topo.client.iface, "tcp port 80")?;
    let state = dir.join("state");
    let mut engine = topo.se1.ns.spawn(&[
        ricochet,
        "engine",
        "--config",
        config.to_str().context("path")?,
        "--interface",
        topo.se1.iface,
        "--pin-dir",
        se_pins.to_str().context("path")?,
        "--state-dir",
        state.to_str().context("path")?,
    ])?;
    engine
        .wait_for_output("engine running")
        .with_context(|| engine.report())?;
    println!("  engine running (pid {})", engine.pid());

    step(
        5,
        "Goto the client: curl http://192.168.35.241/ and http://[fc00:3::24a]/",
    );
    let mut answers = std::collections::BTreeMap::new();
    for i in 0..10 {
        let vip: std::net::IpAddr = if i % 2 == 0 {
            tb::VIP_V4.into()
        } else {
            tb::VIP_V6.into()
        };
        let body = tb::http_get_text(&topo.client.ns, &tb::http_url(vip, "/"))?;
        let body = body.trim().to_owned();
        println!("  curl {:<26} -> {body}", tb::http_url(vip, "/"));
        *answers.entry(body).or_insert(0) += 1;
    }

    step(6, "what the packets show");
    let encap = encap.stop()?.lines()?;
    let through_se = through_se.stop()?.lines()?;
    let at_client = at_client.stop()?.lines()?;
    println!("  On se1's link, the request encapsulated (the seed's step 2):");
    for needles in [
        &[
            "192.168.33.7 > 192.168.33.10: ",
            "192.168.11.2.",
            "> 192.168.35.241.80",
        ][..],
        &[
            "192.168.33.7 > 192.168.34.10: ",
            "192.168.11.2.",
            "> 192.168.35.241.80",
        ][..],
        &["fc00::7 > fc00::10: ", "fc00:11::2.", "> fc00:3::24a.80"][..],
    ] {
        match find(&encap, needles) {
            Some(l) => println!("    {l}"),
            None => println!("    (no packet matching {needles:?})"),
        }
    }
    println!("  At the client, the reply straight from the VIP (the seed's step 3):");
    match find(&at_client, &["192.168.35.241.80 > 192.168.11.2", "HTTP"])
        .or_else(|| find(&at_client, &["192.168.35.241.80 > 192.168.11.2"]))
    {
        Some(l) => println!("    {l}"),
        None => bail!("no reply from the VIP was captured at the client"),
    }
    println!(
        "  Packets from the VIP seen on se1: {} (replies never cross the load balancer)",
        through_se.len()
    );
    if !through_se.is_empty() {
        bail!(
            "replies crossed the service engine:\n{}",
            through_se.join("\n")
        );
    }
    println!("  Answers per server: {answers:?}");

    step(7, "Goto Applications > Dashboard: `ricochet status`");
    print!(
        "{}",
        run_ok(
            &topo.se1.ns,
            &[
                ricochet,
                "status",
                "--state-dir",
                state.to_str().context("path")?
            ]
        )?
    );

    step(8, "clean up");
    engine.stop()?;
    bed.undo_servers()?;
    run_ok(
        &bed.topo.se1.ns,
        &[
            ricochet,
            "detach",
            "--interface",
            bed.topo.se1.iface,
            "--pin-dir",
            se_pins.to_str().context("path")?,
        ],
    )?;
    drop(bed);
    println!("  namespaces, processes and pins removed");
    if answers.len() < 2 {
        bail!("only one server answered: {answers:?}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let ricochet = match parse_args(std::env::args().skip(1)) {
        Ok(r) => r,
        Err(message) => {
            eprintln!("ricochet-demo: {message}");
            return ExitCode::from(2);
        }
    };
    match demo(&ricochet) {
        Ok(()) => {
            println!("\nDemo complete.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("\nricochet-demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
