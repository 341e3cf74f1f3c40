//! VIP and virtual-service lookup: is the destination a VIP (`VIPS`), and which service
//! answers (VIP, protocol, port) (`SERVICES`, with the VIP's every-port entry as the
//! fallback when its flags say it has one).

use ricochet_common::{ServiceKey, ServiceValue, VipFlags, VipKey};

use crate::{headers::IPPROTO_TCP, parse::Parsed};

/// The VIP and service maps, as the parser and the balancer read them.
pub trait Lookup {
    /// The flags of a VIP, `None` if `key` is not a VIP.
    fn vip_flags(&self, key: &VipKey) -> Option<VipFlags>;
    /// The service of (VIP, protocol, port); port 0 is a VIP's every-port entry.
    fn service(&self, key: &ServiceKey) -> Option<ServiceValue>;
}

/// The flags of `addr` (16-byte map form) if it is a VIP of `family`.
#[inline(always)]
pub fn vip_flags(maps: &impl Lookup, addr: [u8; 16], family: u8) -> Option<VipFlags> {
    maps.vip_flags(&VipKey::from_raw(addr, family))
}

/// The service of a parsed packet: its (VIP, protocol, port) entry, else the VIP's
/// every-port entry of the protocol if the VIP has one.
#[inline(always)]
pub fn find_service(maps: &impl Lookup, p: &Parsed) -> Option<ServiceValue> {
    let mut key = ServiceKey::from_raw(p.dst, p.dport, p.proto, p.family);
    if let Some(v) = maps.service(&key) {
        return Some(v);
    }
    let all_ports = if p.proto == IPPROTO_TCP {
        VipFlags::TCP_ALL_PORTS
    } else {
        VipFlags::UDP_ALL_PORTS
    };
    if !p.vip_flags.contains(all_ports) {
        return None;
    }
    key.port = [0, 0];
    maps.service(&key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testenv::{addr16, TestEnv};
    use ricochet_common::{FAMILY_V4, FAMILY_V6};

    #[test]
    fn vip_keys_carry_the_family_and_zero_padding() {
        let mut e = TestEnv::default();
        e.add_vip(&[10, 0, 0, 1], VipFlags::UDP_ALL_PORTS);
        assert_eq!(
            vip_flags(&e, addr16(&[10, 0, 0, 1]), FAMILY_V4),
            Some(VipFlags::UDP_ALL_PORTS)
        );
        assert_eq!(vip_flags(&e, addr16(&[10, 0, 0, 1]), FAMILY_V6), None);
        assert_eq!(vip_flags(&e, addr16(&[10, 0, 0, 2]), FAMILY_V4), None);
    }
}
