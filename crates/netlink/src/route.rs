//! The default route's interface (`ip route show default`).

use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::{
    route::{RouteAttribute, RouteHeader, RouteMessage, RouteType},
    AddressFamily, RouteNetlinkMessage,
};

use crate::{link::link_by_index, request, Result};

/// The interface of the main table's default route, IPv4 first, then IPv6 (for a
/// multipath route, its first next hop's).
pub fn default_route_interface() -> Result<Option<String>> {
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let op = || format!("listing the {family:?} routes");
        let mut msg = RouteMessage::default();
        msg.header.address_family = family;
        let answers = request(&op, RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)?;
        for answer in answers {
            let RouteNetlinkMessage::NewRoute(route) = answer else {
                continue;
            };
            if let Some(index) = default_route_oif(&route) {
                return link_by_index(index, None).map(|l| Some(l.name));
            }
        }
    }
    Ok(None)
}

fn default_route_oif(route: &RouteMessage) -> Option<u32> {
    if route.header.destination_prefix_length != 0 || route.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(route.header.table);
    let mut oif = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::MultiPath(hops) => {
                oif = oif.or(hops.first().map(|h| h.interface_index));
            }
            _ => {}
        }
    }
    (table == u32::from(RouteHeader::RT_TABLE_MAIN))
        .then_some(oif)
        .flatten()
        .filter(|&i| i != 0)
}
