//! Route netlink against the kernel, each test in a network namespace of its own thread
//! (root): what the calls change, and what the kernel's refusals read like.

use std::net::IpAddr;

use ricochet_netlink::{
    add_address, addresses, create_tunnel, default_route_interface, delete_address, delete_link,
    link_by_name, set_link_up, Errno, Scope, Tunnel,
};
use ricochet_testkit::{lab::ip_batch, netns::in_fresh_netns, require_root};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn addresses_are_added_listed_and_removed() {
    require_root("the netlink tests create namespaces");
    in_fresh_netns(|| {
        set_link_up("lo", true).unwrap();
        assert!(link_by_name("lo").unwrap().up);
        add_address("lo", ip("192.168.35.241"), 32).unwrap();
        add_address("lo", ip("fc00:3::24a"), 128).unwrap();
        let all = addresses("lo").unwrap();
        let find = |a: &str| all.iter().find(|x| x.addr == ip(a)).copied();
        let v4 = find("192.168.35.241").expect("the IPv4 VIP is listed");
        assert_eq!((v4.prefix, v4.scope), (32, Scope::Global));
        let v6 = find("fc00:3::24a").expect("the IPv6 VIP is listed");
        assert_eq!((v6.prefix, v6.scope), (128, Scope::Global));
        assert_eq!(find("127.0.0.1").unwrap().scope, Scope::Host);
        delete_address("lo", ip("192.168.35.241"), 32).unwrap();
        delete_address("lo", ip("fc00:3::24a"), 128).unwrap();
        let left = addresses("lo").unwrap();
        assert!(
            left.iter().all(|a| a.addr.is_loopback()),
            "only lo's own addresses stay: {left:?}"
        );
        set_link_up("lo", false).unwrap();
        assert!(!link_by_name("lo").unwrap().up);
    });
}

#[test]
fn an_address_already_there_is_refused_naming_it() {
    require_root("the netlink tests create namespaces");
    in_fresh_netns(|| {
        add_address("lo", ip("192.168.35.241"), 32).unwrap();
        let e = add_address("lo", ip("192.168.35.241"), 32).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EEXIST));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "adding 192.168.35.241/32 to lo: the kernel answered EEXIST (File exists)"
            ),
            "{text}"
        );
        assert!(text.contains("192.168.35.241 is on lo already"), "{text}");
        // Removing what is not there is refused too.
        let e = delete_address("lo", ip("192.168.35.242"), 32).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EADDRNOTAVAIL));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "removing 192.168.35.242/32 from lo: the kernel answered EADDRNOTAVAIL"
            ),
            "{text}"
        );
        assert!(text.contains("is not on lo"), "{text}");
        // A prefix length IPv4 has not.
        let e = add_address("lo", ip("192.168.35.243"), 33).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EINVAL), "{e}");
        assert!(
            e.to_string().contains("33 is not a valid prefix length"),
            "{e}"
        );
    });
}

#[test]
fn a_missing_interface_is_named() {
    require_root("the netlink tests create namespaces");
    in_fresh_netns(|| {
        let e = add_address("nosuch0", ip("192.168.35.241"), 32).unwrap_err();
        assert_eq!(
            e.to_string(),
            "adding 192.168.35.241/32 to nosuch0: there is no interface nosuch0 in this \
             network namespace"
        );
        for e in [
            addresses("nosuch0").unwrap_err(),
            delete_address("nosuch0", ip("192.168.35.241"), 32).unwrap_err(),
            set_link_up("nosuch0", true).unwrap_err(),
            delete_link("nosuch0").unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(
                text.ends_with("there is no interface nosuch0 in this network namespace"),
                "{text}"
            );
        }
        let e = link_by_name("nosuch0").unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENODEV));
    });
}

#[test]
fn the_default_route_and_links_made_and_deleted() {
    require_root("the netlink tests create namespaces");
    in_fresh_netns(|| {
        assert_eq!(default_route_interface().unwrap(), None);
        ip_batch(&[
            "link add rcnl0 type veth peer name rcnl1".into(),
            "addr add 10.77.0.2/24 dev rcnl0".into(),
            "link set rcnl0 up".into(),
            "link set rcnl1 up".into(),
            "route add default via 10.77.0.1 dev rcnl0".into(),
        ]);
        assert_eq!(default_route_interface().unwrap().as_deref(), Some("rcnl0"));
        let veth = link_by_name("rcnl0").unwrap();
        assert!(veth.is_veth() && veth.up && veth.mtu == 1500, "{veth:?}");
        delete_link("rcnl0").unwrap();
        assert_eq!(
            link_by_name("rcnl1").unwrap_err().errno(),
            Some(Errno::ENODEV)
        );
        assert_eq!(default_route_interface().unwrap(), None);
    });
}

/// With the `ipip` module the tunnel is made; without it (this project's test machines) the
/// kernel's refusal says which module is missing.
#[test]
fn a_tunnel_is_created_or_its_missing_module_named() {
    require_root("the netlink tests create namespaces");
    in_fresh_netns(|| {
        let present = std::path::Path::new("/sys/module/ipip").exists();
        match create_tunnel("rcnltun0", Tunnel::IpIp) {
            Ok(()) => {
                assert!(present, "an ipip tunnel without the ipip module");
                assert_eq!(
                    link_by_name("rcnltun0").unwrap().kind.as_deref(),
                    Some("ipip")
                );
                delete_link("rcnltun0").unwrap();
            }
            Err(e) => {
                assert!(!present, "the ipip module is loaded, yet: {e}");
                let text = e.to_string();
                assert!(
                    text.starts_with("creating tunnel rcnltun0 (type ipip): the kernel answered"),
                    "{text}"
                );
                assert!(text.contains("modprobe ipip"), "{text}");
            }
        }
    });
}
