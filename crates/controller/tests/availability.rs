//! No client can stall the API: large engine reports, idle and half-sent connections,
//! thousands of waiting long polls. Each test bounds its own time.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{options, Ctl};
use ricochet_controller::connections::{raise_fd_limit, Limits};
use serde_json::{json, Value};

fn addr(ctl: &Ctl) -> SocketAddr {
    ctl.url.trim_start_matches("http://").parse().unwrap()
}

/// A configuration of `pools` pools of `per_pool` servers each (no virtual service).
fn many_servers(pools: usize, per_pool: usize) -> Value {
    let pools: Vec<Value> = (0..pools)
        .map(|p| {
            let servers: Vec<Value> = (0..per_pool)
                .map(|i| json!({"ip": format!("10.{}.{}.{}", p, i / 250, i % 250 + 1)}))
                .collect();
            json!({"name": format!("pool-{p}"), "servers": servers})
        })
        .collect();
    json!({"pools": pools})
}

fn report_of(pools: usize, per_pool: usize, state: &str) -> Vec<u8> {
    let servers: Vec<Value> = (0..pools)
        .flat_map(|p| {
            (0..per_pool).map(move |i| {
                json!({"pool": format!("pool-{p}"),
                       "ip": format!("10.{}.{}.{}", p, i / 250, i % 250 + 1),
                       "state": state})
            })
        })
        .collect();
    serde_json::to_vec(&json!({
        "revision": 2, "state": "running",
        "counters": {"services": [], "servers": [], "reasons": {}},
        "servers": servers
    }))
    .unwrap()
}

/// Two engines report 120,000 servers each at once, each against a previous report of
/// the same servers (the comparison that was quadratic); `/healthz` keeps answering
/// within a second throughout (before: every route froze for 14 s). The servers stay
/// `unknown`, so that the test times the report's processing, not 240,000 events.
#[test]
fn two_reports_of_120k_servers_leave_healthz_answering() {
    let ctl = Ctl::start();
    let (pools, per_pool) = (12, 10_000);
    ctl.put("/api/v1/configuration", many_servers(pools, per_pool))
        .expect(200);
    for name in ["se1", "se2"] {
        ctl.post(
            "/api/v1/service-engines",
            json!({"name": name, "addresses": ["192.168.33.7"], "version": "1"}),
        )
        .expect(201);
    }
    let report = report_of(pools, per_pool, "unknown");
    for name in ["se1", "se2"] {
        ctl.raw(
            "POST",
            &format!("/api/v1/service-engines/{name}/report"),
            Some(&ctl.token),
            Some("application/json"),
            Some(report.clone()),
        )
        .expect(200);
    }
    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (worst, answers) = std::thread::scope(|s| {
        let reporters: Vec<_> = ["se1", "se2"]
            .into_iter()
            .map(|name| {
                let (ctl, report) = (&ctl, report.clone());
                s.spawn(move || {
                    ctl.raw(
                        "POST",
                        &format!("/api/v1/service-engines/{name}/report"),
                        Some(&ctl.token),
                        Some("application/json"),
                        Some(report),
                    )
                })
            })
            .collect();
        let prober = s.spawn(|| {
            let mut worst = Duration::ZERO;
            while !done.load(Ordering::Acquire) {
                let t = Instant::now();
                ctl.raw("GET", "/healthz", None, None, None).expect(200);
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            worst
        });
        let answers: Vec<_> = reporters.into_iter().map(|r| r.join()).collect();
        done.store(true, Ordering::Release);
        let answers: Vec<_> = answers.into_iter().map(|a| a.unwrap()).collect();
        (prober.join().unwrap(), answers)
    });
    for a in answers {
        let a = a.expect(200);
        assert_eq!(
            a.body["report"]["report"]["servers"]
                .as_array()
                .unwrap()
                .len(),
            pools * per_pool
        );
    }
    println!(
        "two reports of {} servers in {:?}; slowest /healthz meanwhile {worst:?}",
        pools * per_pool,
        started.elapsed()
    );
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");

    // One server more than configured is refused.
    let too_many = report_of(pools, per_pool + 1, "up");
    let r = ctl.raw(
        "POST",
        "/api/v1/service-engines/se1/report",
        Some(&ctl.token),
        Some("application/json"),
        Some(too_many),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.error(), "report_too_large");
}

/// Whether the server closed `stream` (EOF or reset) within `wait`.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Whether the server has closed `stream`, without waiting.
fn closed_now(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let closed = match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// 1,100 idle connections without a token, more than the connection limit: an
/// authenticated request is still answered (the oldest unauthenticated connections
/// make room), and idle and half-sent connections are closed after their timeouts.
#[test]
fn idle_connections_never_lock_out_an_authenticated_client() {
    raise_fd_limit().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path());
    o.limits = Limits {
        max_connections: 1000,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(6),
    };
    let ctl = Ctl::start_with(dir, o);
    let addr = addr(&ctl);
    let mut idle: Vec<TcpStream> = (0..1100)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    let t = Instant::now();
    let r = ctl.get("/api/v1/pools").expect(200);
    assert!(r.body["items"].is_array());
    let answered = t.elapsed();
    assert!(
        answered < Duration::from_secs(5),
        "answered in {answered:?}"
    );
    // The accept loop evicted the oldest idle connections (at least the 100 above the
    // limit, and one for the authenticated client's own connection).
    std::thread::sleep(Duration::from_millis(200));
    let closed: Vec<bool> = idle.iter_mut().map(closed_now).collect();
    let evicted = closed.iter().filter(|c| **c).count();
    assert!(
        (101..=150).contains(&evicted),
        "{evicted} idle connections were closed, not the 101 above the limit"
    );
    assert!(
        closed[..100].iter().all(|c| *c) && !closed[1099],
        "the oldest go first"
    );
    let closed = evicted;
    println!("1,100 idle connections: authenticated answer in {answered:?}, {closed} evicted");

    // A half-sent header is closed after the header timeout; an idle connection after
    // the idle timeout; an authenticated one stays.
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut half, Duration::from_secs(5)));
    let header_closed = t.elapsed();
    assert!(
        header_closed >= Duration::from_millis(900),
        "{header_closed:?}"
    );
    let mut quiet = TcpStream::connect(addr).unwrap();
    let t = Instant::now();
    assert!(closed_within(&mut quiet, Duration::from_secs(15)));
    let idle_closed = t.elapsed();
    assert!(idle_closed >= Duration::from_secs(5), "{idle_closed:?}");
    println!(
        "half-sent header closed after {header_closed:?}, idle connection after {idle_closed:?}"
    );
    drop(idle);
}

/// An HTTP/1.1 long poller over one connection, as an engine polls: each answer's
/// revision is the next poll's `after`.
async fn poll_forever(addr: SocketAddr, token: String, mut after: u64, answers: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let request = format!(
            "GET /api/v1/desired?after={after}&wait=120 HTTP/1.1\r\nHost: c\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        if s.write_all(request.as_bytes()).await.is_err() {
            return;
        }
        // Header, then Content-Length bytes of body.
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().trim_matches('"').to_owned())
        };
        let length: usize = field("content-length:").map_or(0, |v| v.parse().unwrap());
        after = field("etag:").map_or(after, |v| v.parse().unwrap());
        while buf.len() < header_end + length {
            let mut chunk = [0u8; 65536];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..header_end + length);
        answers.fetch_add(1, Ordering::Relaxed);
    }
}

/// Configuration writes per second over `period`.
fn write_rate(ctl: &Ctl, next: &mut usize, period: Duration) -> f64 {
    let start = Instant::now();
    let mut writes = 0u32;
    while start.elapsed() < period {
        let name = format!("hm-{next}");
        *next += 1;
        ctl.post(
            "/api/v1/health-monitors",
            json!({"name": name, "type": "tcp", "send_interval": 10, "receive_timeout": 4}),
        )
        .expect(201);
        writes += 1;
    }
    f64::from(writes) / start.elapsed().as_secs_f64()
}

/// 2,000 engines waiting in long polls, each woken by commits and polling again: writes
/// keep more than half their rate without pollers (before: 83/s fell to 4.4/s; with wakes
/// paced at a fixed 0.5 s, 185/s fell to 41/s). Wakes are spaced by four times what the
/// last one's answers took, so answering polls takes at most a quarter of the time.
#[test]
fn two_thousand_long_polls_leave_writes_above_half_their_idle_rate() {
    raise_fd_limit().unwrap();
    let ctl = Ctl::start();
    ctl.seed_web();
    let mut next = 0;
    let idle = write_rate(&ctl, &mut next, Duration::from_secs(3));

    let revision = ctl.get("/api/v1/desired").expect(200).body["revision"]
        .as_u64()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let answers = Arc::new(AtomicU64::new(0));
    let addr = addr(&ctl);
    for _ in 0..2000 {
        runtime.spawn(poll_forever(
            addr,
            ctl.token.clone(),
            revision - 1,
            Arc::clone(&answers),
        ));
    }
    // Every poller answered once (they were behind) and waits again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while answers.load(Ordering::Relaxed) < 2000 {
        assert!(
            Instant::now() < deadline,
            "the 2,000 pollers did not get going"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = answers.load(Ordering::Relaxed);
    let polled = write_rate(&ctl, &mut next, Duration::from_secs(4));
    let woken = answers.load(Ordering::Relaxed) - before;
    runtime.shutdown_background();
    println!(
        "writes/s: {idle:.1} without pollers, {polled:.1} with 2,000 waiting polls \
         ({woken} poll answers meanwhile)"
    );
    assert!(
        woken >= 2000,
        "the commits woke the pollers ({woken} answers)"
    );
    assert!(
        polled > idle / 2.0,
        "writes fell from {idle:.1}/s to {polled:.1}/s with 2,000 pollers"
    );
}
