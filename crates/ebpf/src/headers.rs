//! Wire layouts of the headers the programs read and write.
//!
//! Fields that are multi-byte on the wire are byte arrays: the structs have alignment
//! 1, so a pointer to any packet offset is a valid pointer to them, and reading a field
//! never needs an unaligned load the verifier would reject.

pub const ETH_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;
pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const TCP_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const ICMP_LEN: usize = 8;
pub const GRE_LEN: usize = 4;

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_MH: u8 = 135;

/// IPv4 "don't fragment" bit in the flags/fragment-offset field.
pub const IP_DF: u16 = 0x4000;
/// "More fragments" bit and the offset mask: any of them set means a fragment.
pub const IP_MF_OFFSET: u16 = 0x3fff;
/// The fragment offset alone: set in any fragment but the first.
pub const IP_OFFSET: u16 = 0x1fff;

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMPV6_PKT_TOOBIG: u8 = 2;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    pub fn version(&self) -> u8 {
        self.ver_ihl >> 4
    }
    /// Header length in 32-bit words.
    pub fn ihl(&self) -> u8 {
        self.ver_ihl & 0x0f
    }
    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes(self.tot_len)
    }
    pub fn frag(&self) -> u16 {
        u16::from_be_bytes(self.frag_off)
    }
    /// Sets the identification field and updates the checksum incrementally (RFC 1624).
    pub fn set_id(&mut self, id: u16) {
        let old = u16::from_be_bytes(self.id);
        let check = u16::from_be_bytes(self.check);
        // HC' = ~(~HC + ~m + m')
        let mut sum = (!check) as u32 + (!old) as u32 + id as u32;
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        self.id = id.to_be_bytes();
        self.check = (!(sum as u16)).to_be_bytes();
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8), flow label (20).
    pub vtc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl Ipv6Hdr {
    pub fn version(&self) -> u8 {
        self.vtc_flow[0] >> 4
    }
    pub fn traffic_class(&self) -> u8 {
        (self.vtc_flow[0] << 4) | (self.vtc_flow[1] >> 4)
    }
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes(self.payload_len)
    }
}

/// The first four bytes of TCP and UDP: the ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub src: [u8; 2],
    pub dst: [u8; 2],
}

/// A UDP header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHdr {
    pub src: [u8; 2],
    pub dst: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

/// The GRE header of RFC 2784 without its optional checksum: flags and version 0, then
/// the EtherType of what follows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GreHdr {
    pub flags_version: [u8; 2],
    pub proto: [u8; 2],
}

/// ICMP "destination unreachable" / ICMPv6 "packet too big" header (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: [u8; 2],
    /// ICMPv4 frag-needed: 2 unused bytes then the next-hop MTU; ICMPv6 PTB: the MTU.
    pub rest: [u8; 4],
}

// The `*_LEN` constants are the structs' sizes: programs use either for offsets.
const _: () = assert!(core::mem::size_of::<EthHdr>() == ETH_LEN);
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == IPV4_LEN);
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == IPV6_LEN);
const _: () = assert!(core::mem::size_of::<IcmpHdr>() == ICMP_LEN);
const _: () = assert!(core::mem::size_of::<UdpHdr>() == UDP_LEN);
const _: () = assert!(core::mem::size_of::<GreHdr>() == GRE_LEN);

/// The outer IPv4 header of an encapsulated IPv4 packet (RFC 2003 for IP-in-IP, and GRE
/// and GUE alike): TOS (DSCP and ECN) and DF copied from the inner header, protocol
/// `proto`, `tunnel_len` bytes of tunnel header between it and the inner packet,
/// checksum filled in.
pub fn outer_v4(
    inner: &Ipv4Hdr,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    proto: u8,
    tunnel_len: u16,
) -> Ipv4Hdr {
    outer_v4_for(
        inner.tos,
        inner.frag() & IP_DF != 0,
        inner.total_len(),
        src,
        dst,
        ttl,
        proto,
        tunnel_len,
    )
}

/// [`outer_v4`] from the three things it reads of the inner packet: its TOS, its DF bit
/// and its length (the data plane reads just those, as for [`outer_v6_for`]).
#[allow(clippy::too_many_arguments)] // one per header field
#[inline(always)]
pub fn outer_v4_for(
    tos: u8,
    df: bool,
    inner_len: u16,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    proto: u8,
    tunnel_len: u16,
) -> Ipv4Hdr {
    let words = outer_v4_words(tos, df, 0, inner_len, src, dst, ttl, proto, tunnel_len);
    // SAFETY: Ipv4Hdr is 20 bytes of byte fields (any bit pattern is one), as are the words.
    unsafe { core::mem::transmute::<[u32; 5], Ipv4Hdr>(words) }
}

/// [`outer_v4_for`]'s header with identification `id`, as the five 32-bit words that
/// hold it in memory (each word's bytes are the wire's, `u32::from_ne_bytes`): what
/// the data plane stores into the packet a word at a time
/// ([`crate::packet::store_u32`]). The checksum is summed over the words' 16-bit halves
/// in memory order, which gives the same bytes as summing in network order (RFC 1071's
/// byte-order independence).
#[allow(clippy::too_many_arguments)] // one per header field
#[inline(always)]
pub fn outer_v4_words(
    tos: u8,
    df: bool,
    id: u16,
    inner_len: u16,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    proto: u8,
    tunnel_len: u16,
) -> [u32; 5] {
    let tot = inner_len
        .wrapping_add(IPV4_LEN as u16 + tunnel_len)
        .to_be_bytes();
    let id = id.to_be_bytes();
    let frag = if df { IP_DF } else { 0 }.to_be_bytes();
    let mut w = [
        u32::from_ne_bytes([0x45, tos, tot[0], tot[1]]),
        u32::from_ne_bytes([id[0], id[1], frag[0], frag[1]]),
        u32::from_ne_bytes([ttl, proto, 0, 0]),
        u32::from_ne_bytes(src),
        u32::from_ne_bytes(dst),
    ];
    let mut sum = 0u32;
    let mut i = 0;
    while i < w.len() {
        sum += (w[i] & 0xffff) + (w[i] >> 16);
        i += 1;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let check = (!(sum as u16)).to_ne_bytes();
    w[2] = u32::from_ne_bytes([ttl, proto, check[0], check[1]]);
    w
}

/// [`outer_v4`] of an IPv4-in-IPv4 packet: protocol 4, nothing between the headers.
pub fn ipip_outer_v4(inner: &Ipv4Hdr, src: [u8; 4], dst: [u8; 4], ttl: u8) -> Ipv4Hdr {
    outer_v4(inner, src, dst, ttl, IPPROTO_IPIP, 0)
}

/// The outer IPv6 header of an encapsulated IPv6 packet (RFC 2473 for IPv6-in-IPv6, and
/// GRE and GUE alike): traffic class copied from the inner header, `flow_label` (20 bits)
/// for ECMP entropy, next header `next_hdr`, `tunnel_len` bytes of tunnel header between
/// it and the inner packet.
pub fn outer_v6(
    inner: &Ipv6Hdr,
    src: [u8; 16],
    dst: [u8; 16],
    flow_label: u32,
    hop_limit: u8,
    next_hdr: u8,
    tunnel_len: u16,
) -> Ipv6Hdr {
    outer_v6_for(
        inner.traffic_class(),
        inner.payload_len().wrapping_add(IPV6_LEN as u16),
        src,
        dst,
        flow_label,
        hop_limit,
        next_hdr,
        tunnel_len,
    )
}

/// [`outer_v6`] from the two things it reads of the inner packet: its traffic class and
/// its length (header included). The data plane reads just those, not a copy of the
/// whole inner header (40 bytes of a stack the verifier holds to 512).
#[allow(clippy::too_many_arguments)] // one per header field
#[inline(always)]
pub fn outer_v6_for(
    traffic_class: u8,
    inner_len: u16,
    src: [u8; 16],
    dst: [u8; 16],
    flow_label: u32,
    hop_limit: u8,
    next_hdr: u8,
    tunnel_len: u16,
) -> Ipv6Hdr {
    let words = outer_v6_words(
        traffic_class,
        inner_len,
        &src,
        &dst,
        flow_label,
        hop_limit,
        next_hdr,
        tunnel_len,
    );
    // SAFETY: Ipv6Hdr is 40 bytes of byte fields (any bit pattern is one), as are the words.
    unsafe { core::mem::transmute::<[u32; 10], Ipv6Hdr>(words) }
}

/// [`outer_v6_for`]'s header as the ten 32-bit words that hold it in memory (as for
/// [`outer_v4_words`]).
#[allow(clippy::too_many_arguments)] // one per header field
#[inline(always)]
pub fn outer_v6_words(
    traffic_class: u8,
    inner_len: u16,
    src: &[u8; 16],
    dst: &[u8; 16],
    flow_label: u32,
    hop_limit: u8,
    next_hdr: u8,
    tunnel_len: u16,
) -> [u32; 10] {
    let tc = traffic_class as u32;
    let word = (6u32 << 28) | (tc << 20) | (flow_label & 0x000f_ffff);
    let payload = inner_len.wrapping_add(tunnel_len).to_be_bytes();
    let [s0, s1, s2, s3] = addr_words(src);
    let [d0, d1, d2, d3] = addr_words(dst);
    [
        u32::from_ne_bytes(word.to_be_bytes()),
        u32::from_ne_bytes([payload[0], payload[1], next_hdr, hop_limit]),
        s0,
        s1,
        s2,
        s3,
        d0,
        d1,
        d2,
        d3,
    ]
}

/// An address as the four words that hold it in memory.
#[inline(always)]
pub fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// [`outer_v6`] of an IPv6-in-IPv6 packet: next header 41, nothing between the headers.
pub fn ipip_outer_v6(
    inner: &Ipv6Hdr,
    src: [u8; 16],
    dst: [u8; 16],
    flow_label: u32,
    hop_limit: u8,
) -> Ipv6Hdr {
    outer_v6(inner, src, dst, flow_label, hop_limit, IPPROTO_IPV6, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner_v4(tos: u8, frag: u16, len: u16) -> Ipv4Hdr {
        Ipv4Hdr {
            ver_ihl: 0x45,
            tos,
            tot_len: len.to_be_bytes(),
            id: [0x12, 0x34],
            frag_off: frag.to_be_bytes(),
            ttl: 63,
            proto: IPPROTO_TCP,
            check: [0, 0],
            src: [192, 168, 11, 2],
            dst: [192, 168, 35, 241],
        }
    }

    #[test]
    fn outer_v4_copies_tos_and_df_and_checksums() {
        let o = ipip_outer_v4(
            &inner_v4(0xb9, IP_DF, 60),
            [192, 168, 33, 7],
            [192, 168, 33, 10],
            64,
        );
        assert_eq!(o.tos, 0xb9);
        assert_eq!(o.total_len(), 80);
        assert_eq!(o.frag(), IP_DF);
        assert_eq!(o.proto, 4);
        // A correct header sums to 0xffff including its checksum.
        assert_eq!(crate::csum::ipv4_header(&o), 0);
        let mut o = ipip_outer_v4(&inner_v4(0, 0, 60), [1, 1, 1, 1], [2, 2, 2, 2], 64);
        assert_eq!(o.frag(), 0, "no DF on the inner packet, none on the outer");
        for id in [1, 0x1234, 0xffff, 0] {
            o.set_id(id);
            assert_eq!(o.id, id.to_be_bytes());
            assert_eq!(
                crate::csum::ipv4_header(&o),
                0,
                "checksum still valid after set_id({id:#x})"
            );
        }
    }

    #[test]
    fn outer_v4_words_with_an_id_are_the_header_with_that_id() {
        for (id, df, tos) in [(0, true, 0), (0x1234, false, 0xb9), (0xffff, false, 3)] {
            let mut want = outer_v4_for(tos, df, 1400, [10, 0, 0, 1], [10, 9, 8, 7], 64, 47, 4);
            want.set_id(id);
            let words = outer_v4_words(tos, df, id, 1400, [10, 0, 0, 1], [10, 9, 8, 7], 64, 47, 4);
            let mut bytes = [0u8; 20];
            for (chunk, w) in bytes.chunks_mut(4).zip(words) {
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            // SAFETY: Ipv4Hdr is 20 bytes of byte fields.
            let got: Ipv4Hdr = unsafe { core::mem::transmute(bytes) };
            assert_eq!(got, want, "id {id:#x}");
            assert_eq!(crate::csum::ipv4_header(&got), 0);
        }
    }

    #[test]
    fn outer_v6_carries_traffic_class() {
        let inner = Ipv6Hdr {
            vtc_flow: [0x6b, 0x80, 0, 0],
            payload_len: 100u16.to_be_bytes(),
            next_hdr: IPPROTO_TCP,
            hop_limit: 64,
            src: [1; 16],
            dst: [2; 16],
        };
        assert_eq!(inner.traffic_class(), 0xb8);
        let o = ipip_outer_v6(&inner, [3; 16], [4; 16], 0xfff_ffff, 64);
        assert_eq!(o.version(), 6);
        assert_eq!(o.traffic_class(), 0xb8);
        assert_eq!(o.payload_len(), 140);
        assert_eq!(o.next_hdr, 41);
        assert_eq!(u32::from_be_bytes(o.vtc_flow) & 0xfffff, 0xfffff);
    }
}
