//! Controller writes: how many one-object writes per second the controller commits with
//! 10, 1,000 and 10,000 objects stored, so that a write's cost shows whether it follows
//! what the write touches or the size of the configuration.
//!
//! One `ricochet controller` release process per size runs on a state directory on this
//! machine's disk (each commit is fsynced, as in production), authentication off, on
//! loopback. A declarative apply stores N objects in each (half pools of one server, half
//! virtual services each on a VIP of its own); then rounds, interleaved over the sizes,
//! of one client on one keep-alive connection writing for a fixed time: creates of health
//! monitors, replaces of one virtual service (its port alternating, so each is a change),
//! and deletes of the monitors the round created. Fsync times wander on a shared disk, so
//! rates are medians of the rounds with their range. The mean commit time (the store's
//! fsync, mostly) comes from the controller's own metrics.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{json, Value};

use crate::report::table;
use crate::{Body, Ctx};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

/// A controller process and its state directory, both gone when dropped.
struct Controller {
    child: Child,
    dir: PathBuf,
    base: String,
    agent: ureq::Agent,
}

impl Controller {
    fn start(ctx: &Ctx) -> anyhow::Result<Controller> {
        let bin = ctx.ricochet_binary()?;
        // On the report's disk, not a tmpfs: the commits' fsync is part of a write's cost.
        let dir = ctx
            .out_dir
            .join(format!("controller-state-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let child = Command::new(&bin)
            .args(["controller", "--no-auth", "--listen", &addr.to_string()])
            .arg("--state-dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} controller", bin.display()))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        let controller = Controller {
            child,
            dir,
            base: format!("http://{addr}"),
            agent,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while controller.call("GET", "/healthz", None).is_err() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the controller did not answer /healthz within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(controller)
    }

    /// One request; the status and the body.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            ("POST", Some(b)) => self.agent.post(&url).send_json(b),
            ("PUT", Some(b)) => self.agent.put(&url).send_json(b),
            _ => anyhow::bail!("{method} {path} without a body"),
        };
        let mut response = response.with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        Ok((status, text))
    }

    /// A request that must answer `want`.
    fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        want: u16,
    ) -> anyhow::Result<()> {
        let (status, text) = self.call(method, path, body)?;
        anyhow::ensure!(status == want, "{method} {path}: {status} {text}");
        Ok(())
    }

    /// The sum and count of the commit-duration histogram, from `/metrics`.
    fn commits(&self) -> anyhow::Result<(f64, f64)> {
        let (_, text) = self.call("GET", "/metrics", None)?;
        let value = |name: &str| -> anyhow::Result<f64> {
            let line = text
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{name} missing from /metrics"))?;
            let v = line.split_whitespace().last().unwrap_or_default();
            v.parse().with_context(|| format!("{line:?}"))
        };
        Ok((
            value("ricochet_controller_store_commit_duration_seconds_sum")?,
            value("ricochet_controller_store_commit_duration_seconds_count")?,
        ))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` objects: n/2 pools and n/2 virtual services, each service on its own VIP with its
/// own pool of one server.
fn configuration(n: usize) -> Value {
    let services = n / 2;
    let address =
        |first: u8, i: usize| format!("{first}.{}.{}.{}", i / 62_500, i / 250 % 250, i % 250 + 1);
    json!({
        "network_profiles": [{"name": "dsr", "type": "tcp_fast_path",
                              "dsr": {"enabled": true, "type": "l3", "encapsulation": "ipinip"}}],
        "pools": (0..services).map(|i| json!({"name": format!("pool-{i}"),
            "servers": [{"ip": address(10, i)}]})).collect::<Vec<_>>(),
        "virtual_services": (0..services).map(|i| json!({"name": format!("vs-{i}"),
            "vip": address(11, i), "services": [{"port": 80}], "network_profile": "dsr",
            "pool": format!("pool-{i}")})).collect::<Vec<_>>(),
    })
}

/// What one size measured: rates are medians over the rounds, with their range.
#[derive(Debug, Serialize)]
struct Point {
    objects: usize,
    apply_ms: f64,
    creates_per_s: Spread,
    replaces_per_s: Spread,
    deletes_per_s: Spread,
    mean_commit_ms: f64,
}

/// The median of a set of rounds and their range.
#[derive(Debug, Serialize)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    rounds: Vec<f64>,
}

impl Spread {
    fn of(rounds: Vec<f64>) -> Spread {
        let mut sorted = rounds.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        Spread {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            rounds,
        }
    }

    fn cell(&self) -> String {
        format!("{:.0} ({:.0}-{:.0})", self.median, self.min, self.max)
    }
}

/// Calls `write(i)` for `period` or `limit` times, whichever comes first; writes per
/// second and how many.
fn rate(
    period: Duration,
    limit: usize,
    mut write: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, usize)> {
    let start = Instant::now();
    let mut i = 0;
    while i < limit && start.elapsed() < period {
        write(i)?;
        i += 1;
    }
    Ok((i as f64 / start.elapsed().as_secs_f64(), i))
}

/// One size's controller, loaded, and its rounds so far.
struct Subject {
    controller: Controller,
    objects: usize,
    apply_ms: f64,
    commits_before: (f64, f64),
    creates: Vec<f64>,
    replaces: Vec<f64>,
    deletes: Vec<f64>,
}

impl Subject {
    fn load(ctx: &Ctx, objects: usize) -> anyhow::Result<Subject> {
        let controller = Controller::start(ctx)?;
        let config = configuration(objects);
        let start = Instant::now();
        controller.expect("PUT", "/api/v1/configuration", Some(&config), 200)?;
        let apply_ms = start.elapsed().as_secs_f64() * 1e3;
        let commits_before = controller.commits()?;
        Ok(Subject {
            controller,
            objects,
            apply_ms,
            commits_before,
            creates: Vec::new(),
            replaces: Vec::new(),
            deletes: Vec::new(),
        })
    }

    /// One round: creates of monitors, replaces of one service, deletes of the monitors
    /// the round created (at most as many).
    fn round(&mut self, round: usize, period: Duration) -> anyhow::Result<()> {
        let c = &self.controller;
        let (creates, created) = rate(period, usize::MAX, |i| {
            let monitor = json!({"name": format!("hm-{round}-{i}"), "type": "tcp",
                                 "send_interval": 10, "receive_timeout": 4});
            c.expect("POST", "/api/v1/health-monitors", Some(&monitor), 201)
        })?;
        let (replaces, _) = rate(period, usize::MAX, |i| {
            let vs = json!({"name": "vs-0", "vip": "11.0.0.1",
                            "services": [{"port": 1000 + i % 2}],
                            "network_profile": "dsr", "pool": "pool-0"});
            c.expect("PUT", "/api/v1/virtual-services/vs-0", Some(&vs), 200)
        })?;
        let (deletes, _) = rate(period, created, |i| {
            let path = format!("/api/v1/health-monitors/hm-{round}-{i}");
            c.expect("DELETE", &path, None, 200)
        })?;
        self.creates.push(creates);
        self.replaces.push(replaces);
        self.deletes.push(deletes);
        Ok(())
    }

    fn point(self) -> anyhow::Result<Point> {
        let (sum0, count0) = self.commits_before;
        let (sum1, count1) = self.controller.commits()?;
        Ok(Point {
            objects: self.objects,
            apply_ms: self.apply_ms,
            creates_per_s: Spread::of(self.creates),
            replaces_per_s: Spread::of(self.replaces),
            deletes_per_s: Spread::of(self.deletes),
            mean_commit_ms: (sum1 - sum0) / (count1 - count0).max(1.0) * 1e3,
        })
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<Body> {
    let period = Duration::from_millis(500);
    let rounds = if ctx.quick { 2 } else { 8 };
    let mut subjects = Vec::new();
    for n in SIZES {
        eprintln!("  controller with {n} objects stored: starting and applying");
        subjects.push(Subject::load(ctx, n).with_context(|| format!("{n} objects"))?);
    }
    // Rounds interleaved over the sizes, so that the disk's and the machine's moods
    // reach every size alike.
    for round in 0..rounds {
        eprintln!("  round {}/{rounds}", round + 1);
        for s in &mut subjects {
            let n = s.objects;
            s.round(round, period)
                .with_context(|| format!("{n} objects, round {round}"))?;
        }
    }
    let points = subjects
        .into_iter()
        .map(Subject::point)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let raw = ctx.write_raw_json("controller-writes.json", &points)?;

    let mut md = String::new();
    writeln!(
        md,
        "One-object writes per second through the REST API, one client on one keep-alive \
         connection, against three release `ricochet controller`s (their stores on this \
         machine's disk, every commit fsynced) holding N objects (half pools, half virtual \
         services): median (min-max) of {rounds} rounds of {} s per kind of write, the rounds \
         interleaved over the sizes. Apply: one `PUT /api/v1/configuration` storing the N \
         objects. Mean commit: the store's own commit time over the writes (from `/metrics`). \
         Raw data: [{raw}]({raw}).\n",
        period.as_secs_f64()
    )?;
    let rows: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            vec![
                crate::report::grouped(p.objects as u64),
                format!("{:.0}", p.apply_ms),
                p.creates_per_s.cell(),
                p.replaces_per_s.cell(),
                p.deletes_per_s.cell(),
                format!("{:.2}", p.mean_commit_ms),
            ]
        })
        .collect();
    md.push_str(&table(
        &[
            "objects stored",
            "apply (ms)",
            "creates/s",
            "replaces/s",
            "deletes/s",
            "mean commit (ms)",
        ],
        &rows,
    ));
    let (small, large) = (&points[0], &points[points.len() - 1]);
    let ratio = large.creates_per_s.median / small.creates_per_s.median;
    writeln!(
        md,
        "\nCreates/s with {} objects stored are {ratio:.2}x those with {}: a write reads and \
         validates the objects it touches (its neighbourhood in the store's index), not the \
         configuration. Before that index, every write read, validated and diffed the whole \
         configuration: 85 creates/s with 500 objects stored, and 2.9/s with 10,000 in a debug \
         build.",
        crate::report::grouped(large.objects as u64),
        small.objects
    )?;
    Ok(Body {
        markdown: md,
        headlines: vec![format!(
            "Controller: {:.0} creates/s, {:.0} replaces/s with {} objects stored ({ratio:.2}x \
             the rate with {})",
            large.creates_per_s.median,
            large.replaces_per_s.median,
            crate::report::grouped(large.objects as u64),
            small.objects
        )],
    })
}
