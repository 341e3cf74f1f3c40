//! nginx's stream module as an L4 proxy on a service engine (the alternative to Ricochet that
//! the end-to-end benchmark measures). Needs root.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ricochet_testbed::{
    bytes_content, http_get, http_get_text, http_url, start_nginx, start_nginx_stream_proxy,
    Topology, HTTP_BYTES_PATHS,
};

#[test]
fn nginx_stream_proxy_on_se1_relays_to_both_servers() {
    let topo = Topology::seed().expect("building the seed topology");
    let _web01 = start_nginx(&topo.web01.ns, "web01\n").unwrap();
    let _web02 = start_nginx(&topo.web02.ns, "web02\n").unwrap();
    // The proxy's address, on se1's lo, routed to se1 by the router.
    let listen = Ipv4Addr::new(192, 168, 35, 242);
    topo.se1
        .ns
        .ip(&["addr", "add", &format!("{listen}/32"), "dev", "lo"])
        .unwrap();
    topo.route_vip(listen.into(), topo.se1.ipv4.into()).unwrap();
    let upstreams = [
        SocketAddr::new(topo.web01.ipv4.into(), 80),
        SocketAddr::new(topo.web02.ipv4.into(), 80),
    ];
    let proxy =
        start_nginx_stream_proxy(&topo.se1.ns, SocketAddr::new(listen.into(), 80), &upstreams)
            .unwrap();

    // Each curl is a new connection from a new source port: the hash spreads them.
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let body = http_get_text(&topo.client.ns, &http_url(IpAddr::V4(listen), "/")).unwrap();
        seen.insert(body.trim().to_owned());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["web01", "web02"],
        "{}",
        proxy.report()
    );
    let (path, len) = HTTP_BYTES_PATHS[2];
    let body = http_get(&topo.client.ns, &http_url(IpAddr::V4(listen), path)).unwrap();
    assert!(body == bytes_content(len), "a 1 MB body came back damaged");
}
