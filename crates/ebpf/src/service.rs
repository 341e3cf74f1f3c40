//! VIP and virtual-service lookup, with one hash-map lookup on the common path.
//!
//! - The VIP filter (`VIP_FILTER`, [`ricochet_common::vip_filter`]) answers "not a VIP"
//!   for most other addresses with one word of an array map: such a packet passes
//!   without any hash lookup.
//! - A well-formed TCP or UDP packet then looks up its service (`SERVICES`: VIP,
//!   protocol, port). A hit is the whole lookup: the engine writes a service entry only
//!   for a VIP, so the hit proves the destination is one.
//! - Only the slow paths read `VIPS`, for what the filter cannot tell: whether the
//!   destination really is a VIP (a filter false positive passes) and its flags (the
//!   every-port fallback). Those are a service miss and the packets the parser stops
//!   before their ports (options, fragments, ICMP, extension headers, truncated L4),
//!   which to a VIP are dropped and to anything else pass.

use ricochet_common::{vip_filter, Reason, ServiceKey, ServiceValue, VipFlags, VipKey};

use crate::{headers::IPPROTO_TCP, parse::Parsed};

/// The VIP and service maps, as the parser and the balancer read them.
pub trait Lookup {
    /// Word `index` of `VIP_FILTER` (0 if out of range).
    fn vip_filter_word(&self, index: u32) -> u64;
    /// The flags of a VIP, `None` if `key` is not a VIP.
    fn vip_flags(&self, key: &VipKey) -> Option<VipFlags>;
    /// The service of (VIP, protocol, port); port 0 is a VIP's every-port entry.
    fn service(&self, key: &ServiceKey) -> Option<ServiceValue>;
}

/// False when the filter proves that the address whose filter bit is `bit`
/// ([`vip_filter::bit_v4`], [`vip_filter::bit_v6`]) is not a VIP.
#[inline(always)]
pub fn maybe_vip(maps: &impl Lookup, bit: u32) -> bool {
    let (word, mask) = vip_filter::word_and_mask(bit);
    maps.vip_filter_word(word) & mask != 0
}

/// The flags of `addr` (16-byte map form) if it is a VIP of `family`.
#[inline(always)]
pub fn vip_flags(maps: &impl Lookup, addr: [u8; 16], family: u8) -> Option<VipFlags> {
    maps.vip_flags(&VipKey::from_raw(addr, family))
}

/// What a packet that the parser stopped at `reason` (a drop for a VIP) gets: `reason`
/// if its destination is a VIP, otherwise [`Reason::PassNotVip`] (the filter let it
/// through, but oddities to other addresses are the kernel's business).
#[inline(always)]
pub fn stop_for_vip(maps: &impl Lookup, addr: [u8; 16], family: u8, reason: Reason) -> Reason {
    match vip_flags(maps, addr, family) {
        Some(_) => reason,
        None => Reason::PassNotVip,
    }
}

/// The service of a parsed packet: its (VIP, protocol, port) entry; on a miss, the
/// VIP's every-port entry of the protocol if the VIP's flags say it has one.
/// [`Reason::PassNotVip`] if the destination is not a VIP after all (a false positive
/// of the filter), [`Reason::DropNoService`] if the VIP has no service for the port.
#[inline(always)]
pub fn find_service(maps: &impl Lookup, p: &Parsed) -> Result<ServiceValue, Reason> {
    let mut key = ServiceKey::from_raw(p.dst, p.dport, p.proto, p.family);
    if let Some(v) = maps.service(&key) {
        return Ok(v);
    }
    let flags = vip_flags(maps, p.dst, p.family).ok_or(Reason::PassNotVip)?;
    let all_ports = if p.proto == IPPROTO_TCP {
        VipFlags::TCP_ALL_PORTS
    } else {
        VipFlags::UDP_ALL_PORTS
    };
    if !flags.contains(all_ports) {
        return Err(Reason::DropNoService);
    }
    key.port = [0, 0];
    maps.service(&key).ok_or(Reason::DropNoService)
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

    #[test]
    fn the_filter_holds_every_vip_and_little_else() {
        let mut e = TestEnv::default();
        e.add_vip(&[10, 0, 0, 1], VipFlags::EMPTY);
        let vip6 = [0xfc, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x4a];
        e.add_vip(&vip6, VipFlags::EMPTY);
        assert!(maybe_vip(&e, vip_filter::bit_v4([10, 0, 0, 1])));
        assert!(maybe_vip(&e, vip_filter::bit_v6(&vip6)));
        let others = (2..=255u8)
            .filter(|x| maybe_vip(&e, vip_filter::bit_v4([10, 0, 0, *x])))
            .count();
        assert_eq!(others, 0, "no neighbour of 10.0.0.1 shares its bit");
        // An address whose bit a VIP sets is let through: the exact lookups decide.
        let twin = crate::testenv::filter_twin_v4(&[10, 0, 0, 1]);
        assert!(maybe_vip(&e, vip_filter::bit_v4(twin)));
        assert_eq!(vip_flags(&e, addr16(&twin), FAMILY_V4), None);
        assert_eq!(
            stop_for_vip(&e, addr16(&twin), FAMILY_V4, Reason::DropFragment),
            Reason::PassNotVip
        );
        assert_eq!(
            stop_for_vip(&e, addr16(&[10, 0, 0, 1]), FAMILY_V4, Reason::DropFragment),
            Reason::DropFragment
        );
    }
}
