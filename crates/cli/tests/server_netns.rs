//! `ricochet server setup` in a named network namespace: under `ip netns exec` (a private
//! mount namespace whose bpffs dies with the command) it refuses and names the `nsenter`
//! command; under that command the decapsulator outlives setup. Needs root.

mod support;

use std::process::{Command, Output};

use support::RICOCHET;

/// A named network namespace with a veth `dsr0` up; undoes setup and deletes it on drop.
struct Server {
    name: String,
}

impl Server {
    fn new() -> Server {
        assert!(
            // SAFETY: plain syscall.
            unsafe { libc::geteuid() } == 0,
            "needs root (namespaces, eBPF): run as root"
        );
        let name = format!("rcn{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let server = Server { name };
        for args in [
            vec!["netns", "add", server.name.as_str()],
            vec![
                "-n",
                &server.name,
                "link",
                "add",
                "dsr0",
                "type",
                "veth",
                "peer",
                "name",
                "dsr1",
            ],
            vec!["-n", &server.name, "link", "set", "dsr0", "up"],
            vec!["-n", &server.name, "link", "set", "dsr1", "up"],
        ] {
            let out = Command::new("ip").args(&args).output().unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        }
        server
    }

    fn nsenter(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg(RICOCHET)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.nsenter(&["server", "undo"]);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

const SETUP: [&str; 8] = [
    "server",
    "setup",
    "--vip",
    "192.168.35.241",
    "--interface",
    "dsr0",
    "--decap",
    "ebpf",
];

#[test]
fn setup_under_ip_netns_exec_is_refused_with_the_nsenter_fix() {
    let server = Server::new();
    let out = Command::new("ip")
        .args(["netns", "exec", &server.name, RICOCHET])
        .args(SETUP)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(
        err.contains(&format!(
            "nsenter --net=/run/netns/{} ricochet server setup",
            server.name
        )) && err.contains("ip netns exec"),
        "{err}"
    );

    // The fix works: the decapsulator is still there once setup has exited.
    let out = server.nsenter(&SETUP);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("-netns"),
        "default pins keyed by namespace: {text}"
    );
    let out = server.nsenter(&["server", "check", "--interface", "dsr0"]);
    assert!(
        out.status.success(),
        "check after setup exited: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = server.nsenter(&["server", "undo"]);
    assert!(out.status.success(), "{out:?}");
}
