//! The announcer against a real BIRD 2 (Debian's bird2), in a fresh network namespace
//! with only its loopback, so that the sessions it configures reach nobody: what BIRD
//! accepts of the engine's file, the VIP routes it then holds, and what goes when the
//! engine leaves its group. Needs root and bird2.

use std::net::IpAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use ricochet_config::Config;
use ricochet_daemon::bgp::{Announcer, BgpOptions, Inputs};
use ricochet_daemon::health::DownServers;

const CONFIG: &str = "
network_profiles:
  - { name: dsr, type: tcp_fast_path, dsr: { enabled: true, type: l3, encapsulation: ipinip } }
pools:
  - { name: p, servers: [{ ip: 192.0.2.10 }] }
  - { name: p6, servers: [{ ip: '2001:db8::10' }] }
service_engine_groups:
  - name: g1
    engines: [{ name: se1, addresses: [192.0.2.7, '2001:db8::7'] }]
    bgp:
      local_as: 65001
      peers: [{ ip: 192.0.2.1, remote_as: 65000 }, { ip: '2001:db8::1', remote_as: 65000 }]
      hold_time: 3
      bfd: true
virtual_services:
  - { name: a, vip: 198.51.100.1, services: [{ port: 80 }], network_profile: dsr, pool: p, se_group: g1 }
  - { name: b, vip: '2001:db8:5::1', services: [{ port: 80 }], network_profile: dsr, pool: p6, se_group: g1 }
";

/// `bird` killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `birdc` prints once `done` holds of it (BIRD reconfigures in the background), or
/// a panic with the last output after 5 s.
fn birdc_until(socket: &std::path::Path, args: &[&str], done: impl Fn(&str) -> bool) -> String {
    let t = Instant::now();
    loop {
        let out = birdc(socket, args);
        if done(&out) {
            return out;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "birdc {args:?}:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn birdc(socket: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("birdc")
        .arg("-s")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn bird_takes_the_engines_file_and_drops_it_when_the_engine_leaves_its_group() {
    ricochet_testkit::require_root("running BIRD in a network namespace");
    ricochet_testkit::netns::in_fresh_netns(|| {
        let dir = tempfile::tempdir().unwrap();
        let (socket, include) = (
            dir.path().join("bird.ctl"),
            dir.path().join("ricochet.conf"),
        );
        std::fs::write(&include, "").unwrap();
        let conf = dir.path().join("bird.conf");
        std::fs::write(
            &conf,
            format!(
                "router id 192.0.2.7;\nprotocol device {{}}\ninclude \"{}\";\n",
                include.display()
            ),
        )
        .unwrap();
        let child = Command::new("bird")
            .args(["-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .spawn()
            .expect("bird2 is installed (cargo xtask setup)");
        let _bird = Daemon(child);
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(t.elapsed() < Duration::from_secs(5), "bird does not answer");
            std::thread::sleep(Duration::from_millis(20));
        }

        let config = Config::from_yaml_str(CONFIG).unwrap();
        let desired = config.compile().unwrap();
        let down = DownServers::new();
        let addrs: Vec<IpAddr> = vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()];
        let mut announcer = Announcer::new(BgpOptions {
            bird_socket: socket.clone(),
            include_file: include.clone(),
            drain: Duration::ZERO,
        });
        let inputs = |group| Inputs {
            engine: "se1",
            group,
            attached: true,
            refusal: None,
            stopping: false,
            desired: &desired,
            down: &down,
            interface_addrs: &addrs,
        };
        assert!(announcer.turn(&inputs(config.group_of("se1"))));
        let report = announcer.report().unwrap().clone();
        assert_eq!(report.error, None, "BIRD took the file: {report:?}");
        assert_eq!(
            report.daemon.as_deref().map(|d| d.starts_with("BIRD 2.")),
            Some(true)
        );
        assert_eq!(report.sessions.len(), 2);
        assert!(report.vips.iter().all(|v| v.announced), "{report:?}");
        birdc_until(&socket, &["show", "protocols"], |p| {
            [
                "ricochet_peer_192_0_2_1",
                "ricochet_peer_2001_db8__1",
                "ricochet_bfd",
                "ricochet_vips_ipv4",
            ]
            .iter()
            .all(|name| p.contains(name))
        });
        birdc_until(&socket, &["show", "route"], |r| {
            r.contains("198.51.100.1/32") && r.contains("2001:db8:5::1/128")
        });
        // Debian's BIRD runs as the user `bird`: the file must be readable by others.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&include).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o644);

        // The engine leaves its group: every route and session goes.
        assert!(announcer.turn(&inputs(None)));
        assert!(announcer.report().is_none());
        birdc_until(&socket, &["show", "protocols"], |p| {
            !p.contains("ricochet_")
        });
        birdc_until(&socket, &["show", "route"], |r| !r.contains("198.51.100.1"));
    });
}
