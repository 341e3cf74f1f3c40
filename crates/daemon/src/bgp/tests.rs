use super::*;
use ricochet_config::{BgpPeer, Config, GroupBgp, GroupEngine};

const VIP: &str = "192.168.35.241";
const VIP6: &str = "fc00:3::24a";

fn group(bfd: bool) -> ServiceEngineGroup {
    ServiceEngineGroup {
        name: "g1".into(),
        engines: vec![
            GroupEngine {
                name: "se1".into(),
                addresses: vec!["192.168.33.7".parse().unwrap(), "fc00::7".parse().unwrap()],
            },
            GroupEngine {
                name: "se2".into(),
                addresses: vec!["192.168.33.8".parse().unwrap()],
            },
        ],
        hash_seed: 0,
        bgp: Some(GroupBgp {
            local_as: 65001,
            peers: vec![
                BgpPeer {
                    ip: "192.168.33.1".parse().unwrap(),
                    remote_as: 65000,
                },
                BgpPeer {
                    ip: "fc00::1".parse().unwrap(),
                    remote_as: 65000,
                },
            ],
            hold_time: 3,
            bfd,
            bfd_interval_ms: 100,
        }),
    }
}

/// Two virtual services on two VIPs, pools of two servers each.
fn desired() -> Desired {
    let yaml = format!(
        "network_profiles: [{{name: np, type: tcp_fast_path, dsr: {{enabled: true, type: l3, encapsulation: ipinip}}}}]
pools:
  - {{name: p4, servers: [{{ip: 192.168.33.10}}, {{ip: 192.168.34.10}}]}}
  - {{name: p6, servers: [{{ip: 'fc00::10'}}]}}
virtual_services:
  - {{name: web, vip: {VIP}, services: [{{port: 80}}], network_profile: np, pool: p4}}
  - {{name: web6, vip: '{VIP6}', services: [{{port: 80}}], network_profile: np, pool: p6}}
"
    );
    let config = Config::from_yaml_str(&yaml).unwrap();
    config.compile().unwrap()
}

fn inputs<'a>(
    group: &'a ServiceEngineGroup,
    desired: &'a Desired,
    down: &'a DownServers,
    addrs: &'a [IpAddr],
) -> Inputs<'a> {
    Inputs {
        engine: "se1",
        group: Some(group),
        attached: true,
        refusal: None,
        stopping: false,
        desired,
        down,
        interface_addrs: addrs,
    }
}

fn addrs() -> Vec<IpAddr> {
    vec!["192.168.33.7".parse().unwrap(), "fc00::7".parse().unwrap()]
}

fn announced(plan: &Plan) -> Vec<String> {
    plan.vips
        .iter()
        .filter(|v| v.announced)
        .map(|v| v.vip.to_string())
        .collect()
}

#[test]
fn a_running_engine_announces_every_vip_with_a_server_up() {
    let (g, d, down, a) = (group(false), desired(), DownServers::new(), addrs());
    let plan = plan(&inputs(&g, &d, &down, &a)).unwrap();
    assert_eq!(announced(&plan), [VIP, VIP6]);
    assert_eq!(plan.error, None);
    assert!(
        plan.text.contains(&format!("route {VIP}/32 blackhole;")),
        "{}",
        plan.text
    );
    assert!(plan.text.contains(&format!("route {VIP6}/128 blackhole;")));
    // One session per peer, from the member's address of the peer's family.
    assert!(plan
        .text
        .contains("local 192.168.33.7 as 65001;\n  neighbor 192.168.33.1 as 65000;"));
    assert!(plan
        .text
        .contains("local fc00::7 as 65001;\n  neighbor fc00::1 as 65000;"));
    assert!(plan.text.contains("hold time 3;\n  keepalive time 1;"));
    assert!(!plan.text.contains("bfd"));
    assert_eq!(plan.vips[0].reason, "serving: web (2 of 2 servers up)");
}

#[test]
fn a_vip_whose_servers_are_all_down_is_withdrawn_and_says_why() {
    let (g, d, a) = (group(false), desired(), addrs());
    let mut down = DownServers::new();
    down.insert(("p4".into(), "192.168.33.10".parse().unwrap()));
    let p = plan(&inputs(&g, &d, &down, &a)).unwrap();
    assert_eq!(announced(&p), [VIP, VIP6], "one server of two is still up");
    down.insert(("p4".into(), "192.168.34.10".parse().unwrap()));
    let p = plan(&inputs(&g, &d, &down, &a)).unwrap();
    assert_eq!(announced(&p), [VIP6]);
    assert_eq!(p.vips[0].reason, "no server is up in virtual service web");
    assert!(!p.text.contains(&format!("route {VIP}/32")));
    // The sessions stay: only the route goes.
    assert!(p.text.contains("neighbor 192.168.33.1"));
}

#[test]
fn nothing_is_announced_before_attach_while_stopping_or_behind_the_newest_revision() {
    let (g, d, down, a) = (group(false), desired(), DownServers::new(), addrs());
    for (tweak, why) in [
        (
            (|i: &mut Inputs| i.attached = false) as fn(&mut Inputs),
            "the data plane is not attached yet",
        ),
        (
            |i| i.stopping = true,
            "the engine is stopping (withdrawn to drain)",
        ),
        (
            |i| i.refusal = Some("revision 9 refused"),
            "the engine does not run the newest configuration (revision 9 refused)",
        ),
    ] {
        let mut i = inputs(&g, &d, &down, &a);
        tweak(&mut i);
        let p = plan(&i).unwrap();
        assert!(announced(&p).is_empty(), "{why}");
        assert!(p.vips.iter().all(|v| v.reason == why), "{:?}", p.vips);
        assert!(!p.text.contains("route "), "{why}: {}", p.text);
    }
}

#[test]
fn an_address_missing_from_the_interface_announces_nothing_and_names_it() {
    let (g, d, down) = (group(false), desired(), DownServers::new());
    let a: Vec<IpAddr> = vec!["192.168.33.9".parse().unwrap()];
    let p = plan(&inputs(&g, &d, &down, &a)).unwrap();
    assert!(announced(&p).is_empty());
    let e = p.error.unwrap();
    assert!(
        e.contains("192.168.33.7, fc00::7") && e.contains("192.168.33.9"),
        "{e}"
    );
    assert!(!p.text.contains("protocol bgp"), "{}", p.text);
}

#[test]
fn bfd_is_configured_with_the_groups_interval() {
    let (g, d, down, a) = (group(true), desired(), DownServers::new(), addrs());
    let p = plan(&inputs(&g, &d, &down, &a)).unwrap();
    assert!(p
        .text
        .contains("min rx interval 100 ms; min tx interval 100 ms; multiplier 3;"));
    assert_eq!(p.text.matches("bfd on;").count(), 2);
}

#[test]
fn a_member_without_an_address_of_a_peers_family_has_no_session_to_it() {
    let (g, d, down) = (group(false), desired(), DownServers::new());
    let a: Vec<IpAddr> = vec!["192.168.33.8".parse().unwrap()];
    let mut i = inputs(&g, &d, &down, &a);
    i.engine = "se2";
    let p = plan(&i).unwrap();
    assert!(p.text.contains("neighbor 192.168.33.1"));
    assert!(!p.text.contains("neighbor fc00::1"));
}

#[test]
fn no_group_or_no_bgp_means_no_plan() {
    let (d, down, a) = (desired(), DownServers::new(), addrs());
    let mut g = group(false);
    let mut i = inputs(&g, &d, &down, &a);
    i.group = None;
    assert_eq!(plan(&i), None);
    g.bgp = None;
    assert_eq!(plan(&inputs(&g, &d, &down, &a)), None);
}

#[test]
fn protocol_names_are_bird_symbols() {
    assert_eq!(
        protocol_name("192.168.33.1".parse().unwrap()),
        "ricochet_peer_192_168_33_1"
    );
    assert_eq!(
        protocol_name("fc00::1".parse().unwrap()),
        "ricochet_peer_fc00__1"
    );
}
