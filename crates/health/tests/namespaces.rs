//! Health checks against real servers in the seed's network (shared/TESTBED.md): nginx
//! and dnsmasq on web01, checks from se1. Needs root.
//!
//! Monitors here use sub-second intervals so the file stays fast; the configuration's
//! minimum is 2 s (receive_timeout must be a whole second below send_interval), and the
//! timing rules are the same at any scale.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ricochet_config::HttpResponseCode;
use ricochet_health::{
    run_check, Check, CheckKey, CheckPath, DsrPath, Event, FailureKind, Health, Initial, Monitor,
    NetProber, ProbeSpec, Scheduler, SchedulerConfig,
};
use ricochet_testbed::{self as tb, Host, Topology, DNS_WHOAMI, VIP_V4, VIP_V6};
use tokio::sync::mpsc::UnboundedReceiver;

fn monitor(name: &str, probe: ProbeSpec, interval_ms: u64, timeout_ms: u64) -> Arc<Monitor> {
    Arc::new(Monitor {
        name: name.into(),
        probe,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        rise: 2,
        fall: 2,
    })
}

fn http(path: &str, expect: Option<&str>) -> ProbeSpec {
    ProbeSpec::Http {
        port: 80,
        request: format!("GET {path} HTTP/1.0"),
        codes: vec![HttpResponseCode::Http2xx, HttpResponseCode::Http3xx],
        response: expect.map(str::to_owned),
    }
}

fn check(server: IpAddr, monitor: &Arc<Monitor>, path: CheckPath) -> Check {
    Check {
        key: CheckKey {
            pool: "web-pool".into(),
            server,
            monitor: monitor.name.clone(),
        },
        monitor: monitor.clone(),
        path,
    }
}

/// Runs `f` on a current-thread tokio runtime inside `host`'s namespace (the sockets and
/// the DSR program then belong to it).
fn on<T: Send>(host: &Host, f: impl AsyncFnOnce() -> T + Send) -> T {
    host.ns
        .run(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(f())
        })
        .expect("entering the namespace")
}

/// The next state change of a monitor whose name starts with `monitor_prefix` on
/// `server`, within `limit`.
async fn monitor_change(
    events: &mut UnboundedReceiver<Event>,
    server: IpAddr,
    monitor_prefix: &str,
    limit: Duration,
) -> (Health, String) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no state change of {server} within {limit:?}"))
            .expect("scheduler alive");
        match event {
            Event::Monitor { key, transition }
                if key.server == server && key.monitor.starts_with(monitor_prefix) =>
            {
                return (transition.to, transition.reason)
            }
            _ => {}
        }
    }
}

/// The next state change of `server` itself (its monitors combined), within `limit`.
async fn server_change(
    events: &mut UnboundedReceiver<Event>,
    server: IpAddr,
    limit: Duration,
) -> (Health, String) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no state change of server {server} within {limit:?}"))
            .expect("scheduler alive");
        if let Event::Server {
            server: changed,
            transition,
            ..
        } = event
        {
            if changed == server {
                return (transition.to, transition.reason);
            }
        }
    }
}

/// Slack for scheduling on a loaded 2-CPU machine, added to the timing bounds.
const SLACK: Duration = Duration::from_millis(100);

#[test]
fn tcp_and_http_follow_nginx_with_measured_detection() {
    tb::require_root().unwrap();
    let topo = Topology::seed().unwrap();
    let web01 = IpAddr::from(topo.web01.ipv4);
    let mut nginx = Some(tb::start_nginx(&topo.web01.ns, "web01\n").unwrap());
    let web01_ns = &topo.web01.ns;
    on(&topo.se1, async || {
        // One-shot checks: precise reasons.
        let ok = monitor("http", http("/", Some("web01")), 500, 400);
        assert_eq!(
            run_check(&check(web01, &ok, CheckPath::Direct)).await,
            Ok(())
        );
        let missing = monitor("http-missing", http("/missing", None), 500, 400);
        let failure = run_check(&check(web01, &missing, CheckPath::Direct))
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::ResponseCodeMismatch);
        assert_eq!(
            failure.message,
            "HTTP 404 Not Found not in [200-299, 300-399]"
        );
        let other = monitor("http-body", http("/", Some("web02")), 500, 400);
        let failure = run_check(&check(web01, &other, CheckPath::Direct))
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::PayloadMismatch);
        assert!(
            failure
                .message
                .starts_with("response did not contain \"web02\""),
            "{failure}"
        );

        // Scheduled: TCP and HTTP every 500 ms, rise 2, fall 2.
        let (interval, fall, rise) = (Duration::from_millis(500), 2, 2);
        let tcp = monitor(
            "tcp",
            ProbeSpec::Tcp {
                port: 80,
                request: None,
                response: None,
            },
            500,
            400,
        );
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let scheduler = Scheduler::start(
            vec![
                check(web01, &tcp, CheckPath::Direct),
                check(web01, &ok, CheckPath::Direct),
            ],
            SchedulerConfig {
                max_concurrent: 8,
                initial: Initial::Unknown,
            },
            NetProber,
            tx,
        );
        let (health, reason) = server_change(&mut events, web01, Duration::from_secs(2)).await;
        assert_eq!(
            (health, reason.as_str()),
            (Health::Up, "all 2 monitors are up")
        );

        // Stop nginx: down within interval × fall (+ the last probe's time).
        let stopped = Instant::now();
        drop(nginx.take());
        // A check in flight when nginx stops may still succeed: the bound is fall
        // intervals after it, plus its timeout.
        let bound = interval * fall + Duration::from_millis(400) + SLACK;
        let (health, reason) = server_change(&mut events, web01, bound * 2).await;
        let detection = stopped.elapsed();
        assert_eq!(health, Health::Down);
        assert!(
            reason.contains("connection refused (connecting to 192.168.33.10:80)"),
            "{reason}"
        );
        assert!(
            detection <= bound,
            "down after {detection:?}, bound {bound:?}"
        );
        let (_, server_reason, _) = scheduler.server("web-pool", web01).unwrap();
        eprintln!(
            "nginx stopped: down after {detection:?} (interval×fall = {:?}): {server_reason}",
            interval * fall
        );

        // Start it again: up after rise successes.
        let _nginx = tb::start_nginx(web01_ns, "web01\n").unwrap();
        let started = Instant::now();
        let (health, reason) = server_change(&mut events, web01, interval * (rise + 2)).await;
        assert_eq!(health, Health::Up, "{reason}");
        let recovery = started.elapsed();
        assert_eq!(scheduler.server("web-pool", web01).unwrap().0, Health::Up);
        eprintln!(
            "nginx started: up after {recovery:?} (interval×rise = {:?})",
            interval * rise
        );
        assert!(recovery <= interval * rise + SLACK, "up after {recovery:?}");
    });
}

/// A DNS query for TXT `whoami.ricochet.test` (every byte is ASCII, as `udp_request` is text).
fn whoami_query() -> String {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in DNS_WHOAMI.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    String::from_utf8(q).unwrap()
}

#[test]
fn udp_against_dnsmasq_and_icmp_echo() {
    tb::require_root().unwrap();
    let topo = Topology::seed().unwrap();
    let web01 = IpAddr::from(topo.web01.ipv4);
    let web01_v6 = IpAddr::from(topo.web01.ipv6);
    let mut dns = Some(tb::start_dns(&topo.web01.ns, "web01").unwrap());
    on(&topo.se1, async || {
        let dns_answer = monitor(
            "udp-dns",
            ProbeSpec::Udp {
                port: 53,
                request: Some(whoami_query()),
                response: Some("web01".into()),
            },
            1000,
            500,
        );
        let wrong_answer = monitor(
            "udp-wrong",
            ProbeSpec::Udp {
                port: 53,
                request: Some(whoami_query()),
                response: Some("web02".into()),
            },
            1000,
            500,
        );
        // Avi's rule without an expected response: no ICMP port unreachable is success.
        let silent_ok = monitor(
            "udp-noicmp",
            ProbeSpec::Udp {
                port: 53,
                request: Some("ping".into()),
                response: None,
            },
            1000,
            300,
        );
        for (m, server) in [
            (&dns_answer, web01),
            (&dns_answer, web01_v6),
            (&silent_ok, web01),
        ] {
            assert_eq!(
                run_check(&check(server, m, CheckPath::Direct)).await,
                Ok(()),
                "{} on {server}",
                m.name
            );
        }
        let failure = run_check(&check(web01, &wrong_answer, CheckPath::Direct))
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::PayloadMismatch, "{failure}");

        drop(dns.take());
        for m in [&dns_answer, &silent_ok] {
            let failure = run_check(&check(web01, m, CheckPath::Direct))
                .await
                .unwrap_err();
            assert_eq!(failure.kind, FailureKind::PortUnreachable, "{failure}");
            assert_eq!(
                failure.message,
                "port unreachable: ICMP error to the UDP request to 192.168.33.10:53"
            );
        }

        let ping = monitor("icmp", ProbeSpec::Icmp, 1000, 500);
        for server in [web01, web01_v6, IpAddr::from(topo.web02.ipv4)] {
            assert_eq!(
                run_check(&check(server, &ping, CheckPath::Direct)).await,
                Ok(()),
                "{server}"
            );
        }
        // Nobody has this address: no reply.
        let nobody = IpAddr::from(Ipv4Addr::new(192, 168, 33, 99));
        let failure = run_check(&check(nobody, &ping, CheckPath::Direct))
            .await
            .unwrap_err();
        assert_eq!(failure.kind, FailureKind::Timeout);
        assert_eq!(failure.message, "timeout after 500 ms (no ICMP echo reply)");
    });
}

/// Undoes `ricochet server setup` on web01 and removes its pins, also on panic.
struct ServerSetup {
    host_ns: PathBuf,
    spec: ricochet_server::ServerSpec,
}

impl Drop for ServerSetup {
    fn drop(&mut self) {
        let spec = self.spec.clone();
        let ns = std::fs::File::open(&self.host_ns);
        let result = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = ns.map_err(|e| anyhow::anyhow!("{e}"))?;
            // SAFETY: setns on a valid namespace fd, on a thread of our own.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                anyhow::bail!("setns: {}", std::io::Error::last_os_error());
            }
            ricochet_server::undo(&spec)
        })
        .join();
        if !matches!(result, Ok(Ok(()))) {
            eprintln!("undoing the server setup: {result:?}");
        }
        let _ = std::fs::remove_dir_all(&self.spec.pin_dir);
    }
}

#[test]
fn dsr_check_goes_down_when_the_vip_leaves_lo_while_direct_stays_up() {
    tb::require_root().unwrap();
    let topo = Topology::seed().unwrap();
    let web01 = IpAddr::from(topo.web01.ipv4);
    let web01_v6 = IpAddr::from(topo.web01.ipv6);

    // `ricochet server setup` on web01 (the library behind the command): VIPs on lo,
    // eBPF decapsulation, rp_filter, ARP settings.
    let mut spec = ricochet_server::ServerSpec::new(vec![VIP_V4.into(), VIP_V6.into()]);
    spec.interface = Some(topo.web01.iface.to_owned());
    spec.decap = ricochet_server::DecapMode::Ebpf;
    spec.pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}web01", topo.prefix()));
    let _setup = ServerSetup {
        host_ns: topo.web01.ns.path(),
        spec: spec.clone(),
    };
    topo.web01
        .ns
        .run(|| ricochet_server::setup(&spec))
        .unwrap()
        .expect("server setup on web01");
    let _nginx = tb::start_nginx(&topo.web01.ns, "web01\n").unwrap();
    let _dns = tb::start_dns(&topo.web01.ns, "web01").unwrap();
    let web01_ns = &topo.web01.ns;
    let pin_dir = spec.pin_dir.clone();

    on(&topo.se1, async || {
        let path = DsrPath::attach(topo.se1.iface).expect("attaching the DSR probe encapsulator");
        let mark = path.register(web01).unwrap();
        let mark_v6 = path.register(web01_v6).unwrap();
        assert_ne!(mark, mark_v6);
        assert_eq!(path.register(web01).unwrap(), mark, "one mark per server");
        let via_vip = CheckPath::Vip {
            vip: VIP_V4.into(),
            mark,
        };
        let via_vip_v6 = CheckPath::Vip {
            vip: VIP_V6.into(),
            mark: mark_v6,
        };

        // One-shot: HTTP (v4 and v6) and DNS over UDP through the VIP path.
        let probe_http = monitor("http-vip", http("/", Some("web01")), 1000, 500);
        let dns = monitor(
            "udp-vip",
            ProbeSpec::Udp {
                port: 53,
                request: Some(whoami_query()),
                response: Some("web01".into()),
            },
            1000,
            500,
        );
        assert_eq!(run_check(&check(web01, &probe_http, via_vip)).await, Ok(()));
        assert_eq!(
            run_check(&check(web01_v6, &probe_http, via_vip_v6)).await,
            Ok(())
        );
        assert_eq!(run_check(&check(web01, &dns, via_vip)).await, Ok(()));
        // ICMP through the VIP path: an echo request to the VIP, encapsulated; web01
        // answers from the VIP on its lo.
        let ping = monitor("icmp-vip", ProbeSpec::Icmp, 1000, 500);
        assert_eq!(run_check(&check(web01, &ping, via_vip)).await, Ok(()));
        assert_eq!(run_check(&check(web01_v6, &ping, via_vip_v6)).await, Ok(()));
        let encapsulated = |path: &DsrPath| path.stats()[0];
        assert_eq!(encapsulated(&path).0, "encapsulated");
        assert!(encapsulated(&path).1 >= 3, "{:?}", path.stats());
        let decapsulated = ricochet_server::decap_stats(&pin_dir).unwrap();
        assert!(
            decapsulated[0].0 == "decapsulated" && decapsulated[0].1 >= 3,
            "web01 decapsulated the checks: {decapsulated:?}"
        );

        // Scheduled: HTTP through the VIP and directly, every 500 ms, timeout 300 ms.
        let interval = Duration::from_millis(500);
        let dsr = monitor("http-dsr", http("/", Some("web01")), 500, 300);
        let direct = monitor("http-direct", http("/", Some("web01")), 500, 300);
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let scheduler = Scheduler::start(
            vec![
                check(web01, &dsr, via_vip),
                check(web01, &direct, CheckPath::Direct),
            ],
            SchedulerConfig::default(),
            NetProber,
            tx,
        );
        for _ in 0..2 {
            let (health, reason) =
                monitor_change(&mut events, web01, "http", Duration::from_secs(2)).await;
            assert_eq!(health, Health::Up, "{reason}");
        }

        // The VIP leaves web01's lo; nginx still answers on 192.168.33.10.
        let removed = Instant::now();
        web01_ns
            .ip(&["addr", "del", &format!("{VIP_V4}/32"), "dev", "lo"])
            .unwrap();
        let bound = interval * 2 + Duration::from_millis(300) + SLACK;
        let (health, reason) = monitor_change(&mut events, web01, "http-dsr", bound * 2).await;
        let detection = removed.elapsed();
        assert_eq!(health, Health::Down);
        assert!(
            reason.starts_with(
                "answers on its own address 192.168.33.10 but not through the VIP path \
                 (192.168.35.241:80 encapsulated to 192.168.33.10): VIP missing on lo or no \
                 decapsulation; through the VIP: timeout after 300 ms"
            ),
            "{reason}"
        );
        eprintln!("VIP removed from lo: DSR check down after {detection:?}: {reason}");
        assert!(
            detection <= bound,
            "down after {detection:?}, bound {bound:?}"
        );
        let (server_health, server_reason, _) = scheduler.server("web-pool", web01).unwrap();
        assert_eq!(
            server_health,
            Health::Down,
            "any monitor down makes the server down"
        );
        assert!(server_reason.starts_with("monitor http-dsr: answers on its own address"));
        let direct_state = scheduler
            .monitors()
            .into_iter()
            .find(|m| m.key.monitor == "http-direct")
            .unwrap();
        assert_eq!(direct_state.health, Health::Up, "the direct check stays up");

        // The VIP back on lo: the DSR check rises again.
        let restored = Instant::now();
        web01_ns
            .ip(&["addr", "add", &format!("{VIP_V4}/32"), "dev", "lo"])
            .unwrap();
        let (health, reason) = monitor_change(&mut events, web01, "http-dsr", interval * 4).await;
        assert_eq!(health, Health::Up, "{reason}");
        eprintln!("VIP restored: DSR check up after {:?}", restored.elapsed());
        drop(scheduler);

        // Only web01 still checked through the VIP path: web01_v6's mark is released, its
        // packets are no longer encapsulated (the check fails), and its mark is reused.
        path.retain(&[web01].into()).unwrap();
        assert_eq!(path.registered(), [(web01, mark)]);
        assert!(run_check(&check(web01_v6, &probe_http, via_vip_v6))
            .await
            .is_err());
        let web02_v6 = IpAddr::from(topo.web02.ipv6);
        assert_eq!(path.register(web02_v6).unwrap(), mark_v6, "reused");
        drop(path);
    });
}
