//! Scale-out: a service engine group of two engines behind the router's ECMP route, the
//! routes from BGP (BIRD 2 on the router and beside each engine, BFD at 100 ms, hold time
//! 3 s), on the test bed of `crates/cli/tests/group_e2e.rs` (`ricochet_testbed::group`).
//! Each round builds the bed afresh and measures:
//! - announce to traffic: with every session established, a virtual service added to the
//!   engines' file (the IPv6 VIP) until the first HTTP GET to it from the client succeeds,
//!   and until the router has both engines' routes;
//! - a clean drain of se2 (SIGTERM: withdraw, drain, exit) under 1,000 keep-alive
//!   connections and a new connection every 20 ms: time until the router's route changed,
//!   connections broken, new connections failed;
//! - the loss of se1 as a host (link down, its processes killed) under the same load:
//!   time until the router's route changed (BFD), connections broken, new ones failed;
//!   and the same loss on a second bed without BFD, where the router's 3 s hold timer
//!   notices.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ricochet_testbed::group::{group_config, GroupBed, UnderLoad};
use ricochet_testbed::{get_new, VIP_V4, VIP_V6};
use serde::Serialize;

use crate::{Body, Ctx};

/// Keep-alive connections held through each change.
const CONNECTIONS: usize = 1000;

#[derive(Debug, Serialize)]
struct Round {
    announce_to_route_ms: f64,
    announce_to_traffic_ms: f64,
    announce_to_both_routes_ms: f64,
    drain: Change,
    loss: Change,
    loss_hold_timer: Change,
}

#[derive(Debug, Serialize)]
struct Change {
    converged_ms: f64,
    broken: usize,
    connections: usize,
    new_tried: usize,
    new_failed: usize,
}

impl From<&UnderLoad> for Change {
    fn from(u: &UnderLoad) -> Self {
        Change {
            converged_ms: u.converged.as_secs_f64() * 1e3,
            broken: u.broken.len(),
            connections: u.connections,
            new_tried: u.new_tried,
            new_failed: u.new_failed,
        }
    }
}

fn round(ricochet: &str, n: usize) -> anyhow::Result<Round> {
    let g = GroupBed::new(
        ricochet,
        &format!("scale-out-{n}"),
        &group_config(false, true),
        true,
    )?;
    let (v4, v6): (IpAddr, IpAddr) = (VIP_V4.into(), VIP_V6.into());
    let within = Duration::from_secs(20);
    g.wait_for_hops(v4, &g.engine_ips(false), within)?;
    // The IPv6 sessions may come up after the IPv4 routes: the figure is the announcement,
    // not the session's set-up.
    g.wait_for_sessions(within)?;

    // A new virtual service: until its first answer, and until both routes.
    // Connections are tried once the router has a route: a SYN sent before it is lost and
    // retransmitted by the client after its 1 s initial timeout, which would measure the
    // client's timer instead of the announcement.
    let written = Instant::now();
    g.write_config(&group_config(true, true))?;
    let routed = loop {
        if !g.next_hops(v6)?.is_empty() {
            break written.elapsed();
        }
        anyhow::ensure!(
            written.elapsed() < within,
            "the new VIP {v6} was never routed"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    let traffic = loop {
        if get_new(&g.bed.topo, v6).is_ok() {
            break written.elapsed();
        }
        anyhow::ensure!(
            written.elapsed() < within,
            "the new VIP {v6} never answered"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    g.wait_for_hops(v6, &g.engine_ips(true), within)?;
    let both = written.elapsed();

    let drain = g.under_load(v4, CONNECTIONS, |g| g.drain(1, v4))?;
    g.start_engine(1)?;
    g.wait_for_hops(v4, &g.engine_ips(false), within)?;
    let loss = g.under_load(v4, CONNECTIONS, |g| g.fail_host(0, v4))?;
    drop(g);

    // The same loss without BFD: the router's hold timer (3 s) notices.
    let g = GroupBed::new(
        ricochet,
        &format!("scale-out-{n}-hold"),
        &group_config(false, false),
        false,
    )?;
    g.wait_for_hops(v4, &g.engine_ips(false), within)?;
    let loss_hold = g.under_load(v4, CONNECTIONS, |g| g.fail_host(0, v4))?;
    Ok(Round {
        announce_to_route_ms: routed.as_secs_f64() * 1e3,
        announce_to_traffic_ms: traffic.as_secs_f64() * 1e3,
        announce_to_both_routes_ms: both.as_secs_f64() * 1e3,
        drain: Change::from(&drain),
        loss: Change::from(&loss),
        loss_hold_timer: Change::from(&loss_hold),
    })
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Body> {
    let ricochet = ctx.ricochet_binary()?;
    let ricochet = ricochet.to_str().context("the ricochet binary's path")?;
    let rounds = if ctx.quick { 1 } else { 3 };
    let mut all = Vec::new();
    for n in 0..rounds {
        eprintln!("  scale-out round {}/{rounds}", n + 1);
        all.push(round(ricochet, n).with_context(|| format!("round {}", n + 1))?);
    }
    let raw = ctx.write_raw_json("scale-out.json", &all)?;
    let ms = |f: &dyn Fn(&Round) -> f64| {
        let (m, lo, hi) = median(all.iter().map(f).collect());
        format!("{m:.0} ({lo:.0}-{hi:.0})")
    };
    let per_1000 = |f: &dyn Fn(&Round) -> &Change| {
        let broken: usize = all.iter().map(|r| f(r).broken).sum();
        let held: usize = all.iter().map(|r| f(r).connections).sum();
        let (tried, failed): (usize, usize) = all
            .iter()
            .map(|r| (f(r).new_tried, f(r).new_failed))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        (
            broken as f64 * 1000.0 / held as f64,
            format!("{failed} of {tried}"),
        )
    };
    let (drain_broken, drain_new) = per_1000(&|r| &r.drain);
    let (loss_broken, loss_new) = per_1000(&|r| &r.loss);
    let (hold_broken, hold_new) = per_1000(&|r| &r.loss_hold_timer);
    let mut md = String::new();
    writeln!(
        md,
        "Two engines in one service engine group behind the router's ECMP route, the routes \
         from BGP through BIRD 2 (router and engines; BFD 100 ms x 3, hold time 3 s), nginx on \
         both servers, release `ricochet engine`s in file mode. {rounds} round(s), each on a \
         fresh bed: median (min-max) in ms. Changes run under {CONNECTIONS} keep-alive \
         connections (a GET on each before and after) and a new connection every 20 ms. Raw \
         data: [{raw}]({raw}).\n"
    )?;
    md.push_str(&crate::report::table(
        &["figure", "value"],
        &[
            vec![
                "announce: new virtual service written → the router routes it (ms)".into(),
                ms(&|r| r.announce_to_route_ms),
            ],
            vec![
                "announce to traffic: new virtual service written → first answer (ms)".into(),
                ms(&|r| r.announce_to_traffic_ms),
            ],
            vec![
                "announce: new virtual service written → router has both engines' routes (ms)"
                    .into(),
                ms(&|r| r.announce_to_both_routes_ms),
            ],
            vec![
                "clean drain of an engine: SIGTERM → router moved (ms)".into(),
                ms(&|r| r.drain.converged_ms),
            ],
            vec![
                "clean drain: keep-alive connections broken per 1,000".into(),
                format!("{drain_broken:.1}"),
            ],
            vec!["clean drain: new connections failed".into(), drain_new],
            vec![
                "engine host lost: link down → router moved (failover, ms)".into(),
                ms(&|r| r.loss.converged_ms),
            ],
            vec![
                "engine host lost: keep-alive connections broken per 1,000".into(),
                format!("{loss_broken:.1}"),
            ],
            vec!["engine host lost: new connections failed".into(), loss_new],
            vec![
                "engine host lost, no BFD (hold time 3 s): link down → router moved (ms)".into(),
                ms(&|r| r.loss_hold_timer.converged_ms),
            ],
            vec![
                "engine host lost, no BFD: keep-alive connections broken per 1,000".into(),
                format!("{hold_broken:.1}"),
            ],
            vec![
                "engine host lost, no BFD: new connections failed".into(),
                hold_new,
            ],
        ],
    ));
    let headlines = vec![
        format!("failover (host lost → router moved): {} ms", ms(&|r| r.loss.converged_ms)),
        format!("broken per 1,000 on engine loss: {loss_broken:.1}, on a clean drain: {drain_broken:.1}"),
        format!(
            "announce to traffic for a new virtual service: {} ms",
            ms(&|r| r.announce_to_traffic_ms)
        ),
    ];
    Ok(Body {
        markdown: md,
        headlines,
    })
}
