//! The persistent configuration matches the seed blog post's "Configure the servers".
use std::net::IpAddr;

use ricochet_server::{netplan_and_sysctl, netplan_yaml, sysctl_conf, ServerSpec};
use serde_yaml::Value;

/// The seed's netplan, `lo` and `tunnels` (its `ens160` part is the host's own business).
const SEED: &str = "
network:
    ethernets:
        lo:
                dhcp4: false
                addresses:
                        - 192.168.35.241/32
                        - fc00:3::24a/128
    tunnels:
        tunl0:
                mode: ipip
                local: 192.168.33.10
                remote: 0.0.0.0
                addresses:
                        - 192.168.35.241/32
        ip6tnl0:
                mode: ip6ip6
                local: fc00::10
                remote: ::0
                addresses:
                        - fc00:3::24a/128
    version: 2
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn seed_spec() -> ServerSpec {
    ServerSpec::new(vec![ip("192.168.35.241"), ip("fc00:3::24a")])
}

#[test]
fn netplan_matches_the_seed() {
    let ours = netplan_yaml(&seed_spec(), &[ip("192.168.33.10"), ip("fc00::10")]);
    println!("{ours}");
    let ours: Value = serde_yaml::from_str(&ours).expect("valid YAML");
    let seed: Value = serde_yaml::from_str(SEED).unwrap();
    assert_eq!(
        ours, seed,
        "same lo addresses, tunnels and version as the seed"
    );
    assert_eq!(
        ours["network"]["tunnels"]["tunl0"]["mode"],
        Value::from("ipip")
    );
    assert_eq!(
        ours["network"]["tunnels"]["ip6tnl0"]["mode"],
        Value::from("ip6ip6")
    );
}

#[test]
fn sysctl_lines_relax_rp_filter_set_arp_and_explain_forwarding() {
    let mut spec = seed_spec();
    spec.interface = Some("ens160".into());
    let text = sysctl_conf(&spec);
    println!("{text}");
    let settings: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        settings,
        [
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.lo.rp_filter=0",
            "net.ipv4.conf.tunl0.rp_filter=0",
            "net.ipv4.conf.ens160.rp_filter=0",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.ens160.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
            "net.ipv4.conf.ens160.arp_announce=2",
        ]
    );
    // Without an interface, `all` alone (the kernel applies max(all, interface)).
    let text = sysctl_conf(&seed_spec());
    let arp: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(".arp_"))
        .collect();
    assert_eq!(
        arp,
        [
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2"
        ]
    );
    // The seed's forwarding lines are explained, not set.
    assert!(text
        .contains("# The seed also sets net.ipv4.ip_forward=1 and net.ipv6.conf.all.forwarding=1"));
}

#[test]
fn combined_output_has_both_sections_and_placeholders_without_addresses() {
    let text = netplan_and_sysctl(&seed_spec(), &[]);
    println!("{text}");
    assert!(text.contains("\nnet.ipv4.conf.all.rp_filter=0\n"));
    assert!(
        text.contains("\nnet.ipv4.conf.all.arp_ignore=1\n"),
        "{text}"
    );
    assert!(
        text.contains("\nnet.ipv4.conf.all.arp_announce=2\n"),
        "{text}"
    );
    let yaml = &text[text.find("network:").expect("netplan section")..];
    let v: Value = serde_yaml::from_str(yaml).expect("valid YAML");
    assert_eq!(
        v["network"]["tunnels"]["tunl0"]["local"],
        Value::from("SERVER_IPV4")
    );
    assert_eq!(
        v["network"]["tunnels"]["ip6tnl0"]["local"],
        Value::from("SERVER_IPV6")
    );

    // IPv4 only: no ip6tnl0, no IPv6 forwarding note.
    let v4 = ServerSpec::new(vec![ip("192.168.35.241")]);
    let text = netplan_and_sysctl(&v4, &[ip("192.168.33.10")]);
    assert!(
        !text.contains("ip6tnl0") && !text.contains("ipv6"),
        "{text}"
    );
    // IPv6 only: no rp_filter or ARP lines (IPv4 only), no tunl0.
    let v6 = ServerSpec::new(vec![ip("fc00:3::24a")]);
    let text = netplan_and_sysctl(&v6, &[ip("fc00::10")]);
    assert!(
        !text.contains("rp_filter") && !text.contains("arp_") && !text.contains("tunl0"),
        "{text}"
    );
}
