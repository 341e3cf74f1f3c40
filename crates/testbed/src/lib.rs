//! Ricochet's test bed: real packets in network namespaces.
//!
//! End-to-end tests and the demo build the seed's topology ([`Topology::seed`]: a client, a
//! router, two service engines and two servers, with the addresses of the seed's blog post), run
//! real servers in it ([`start_nginx`], [`start_dns`]), real clients ([`http_get`],
//! [`dns_txt`], [`ping`]) and captures ([`Capture`]). [`SeedBed`] adds what every
//! end-to-end scenario starts from: both servers made DSR-ready by `ricochet server setup` and
//! serving with nginx, undone on drop.
//!
//! Rules this crate keeps (see TESTBED.md):
//! - Every namespace, veth and process it creates is removed when its guard ([`Topology`],
//!   [`Netns`], [`Process`], [`Capture`]) is dropped, also on panic; objects left by a killed run
//!   are swept by the next one (names embed the owner's pid, `rc<pid>-...`).
//! - Nothing is configured in the root namespace: veth pairs are created directly inside the
//!   namespaces, and no route to a test subnet is ever added outside them.
//! - Everything needs root; without it, constructors fail with a message saying so.
//!
//! ```no_run
//! use ricochet_testbed::{http_get_text, http_url, start_nginx, Topology};
//!
//! let topo = Topology::seed()?;
//! let _nginx = start_nginx(&topo.web01.ns, "web01\n")?;
//! let body = http_get_text(&topo.client.ns, &http_url(topo.web01.ipv4.into(), "/"))?;
//! assert_eq!(body, "web01\n");
//! # anyhow::Ok(())
//! ```

mod bed;
pub mod bird;
mod capture;
mod clients;
mod cmd;
mod config;
pub mod group;
mod keepalive;
mod names;
mod netns;
mod process;
mod servers;
mod topology;

use std::net::{Ipv4Addr, Ipv6Addr};

pub use bed::SeedBed;
pub use capture::{Capture, Pcap};
pub use clients::{dns_txt, http_get, http_get_text, http_url, ping, DnsTransport};
pub use config::web_vs_config;
pub use keepalive::{get_new, Conn};
pub use names::TERM_GRACE;
pub use names::{run_prefix, sweep_stale};
pub use netns::Netns;
pub use process::{Process, READY_TIMEOUT};
pub use servers::{
    bytes_content, nginx_stream_proxy_conf, start_dns, start_nginx, start_nginx_stream_proxy,
    DNS_WHOAMI, HTTP_BYTES_PATHS, NGINX_STREAM_MODULE,
};
pub use topology::{format_mac, parse_mac, Host, Mac, Router, Topology};

/// The seed's IPv4 VIP, 192.168.35.241.
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 35, 241);
/// The seed's IPv6 VIP, fc00:3::24a.
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0xfc00, 3, 0, 0, 0, 0, 0, 0x24a);

/// Fails unless the process runs as root, with a message saying that the caller needs root.
/// Every constructor of the test bed calls it first.
pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    anyhow::ensure!(
        euid == 0,
        "this test needs root: it creates network namespaces, veth pairs and XDP programs \
         (effective uid is {euid}). Run it as root, e.g. `cargo xtask test` in a root shell or \
         `sudo -E cargo test`"
    );
    Ok(())
}
