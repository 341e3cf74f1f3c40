//! Internet checksums (RFC 1071) over fixed-size data, written so the verifier sees
//! bounded loops over stack copies.

use crate::headers::{Ipv4Hdr, Ipv6Hdr, UdpHdr, IPPROTO_UDP};

/// Adds 16-bit big-endian words of `data` to `sum` (an odd trailing byte is padded).
#[inline(always)]
pub fn add_bytes(mut sum: u32, data: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < data.len() {
        sum += u16::from_be_bytes([data[i], data[i + 1]]) as u32;
        i += 2;
    }
    if i < data.len() {
        sum += (data[i] as u32) << 8;
    }
    sum
}

/// Folds a 32-bit sum to 16 bits and complements it.
#[inline(always)]
pub fn finish(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The checksum of an IPv4 header as stored (0 when `h.check` is already correct).
#[inline(always)]
pub fn ipv4_header(h: &Ipv4Hdr) -> u16 {
    // SAFETY: Ipv4Hdr is repr(C), 20 bytes, alignment 1, no padding.
    let bytes: &[u8; 20] = unsafe { &*(h as *const Ipv4Hdr as *const [u8; 20]) };
    finish(add_bytes(0, bytes))
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1) for an upper-layer packet.
#[inline(always)]
pub fn ipv6_pseudo(src: &[u8; 16], dst: &[u8; 16], upper_len: u32, next_hdr: u8) -> u32 {
    let mut sum = add_bytes(0, src);
    sum = add_bytes(sum, dst);
    sum += upper_len >> 16;
    sum += upper_len & 0xffff;
    sum + next_hdr as u32
}

/// The UDP checksum of an IPv6 GUE packet from `src` to `dst` with header `udp` (its
/// checksum field 0) carrying `inner`, an IPv6 packet whose upper-layer checksum is
/// right, without reading the inner payload (Linux's "local checksum offload" idea).
///
/// The inner segment's own checksum makes it sum to the complement of its pseudo-header;
/// the pseudo-header's addresses and length are also words of the inner IPv6 header, so
/// header plus segment sum to the header's other words less the next-header value. An
/// inner packet with a wrong checksum gets a wrong outer one: the server drops it, as it
/// would have dropped the inner packet. The parser admits only TCP and UDP right after
/// the inner header, whose checksums IPv6 makes mandatory.
#[inline(always)]
pub fn gue_v6(src: &[u8; 16], dst: &[u8; 16], udp: &UdpHdr, inner: &Ipv6Hdr) -> u16 {
    let udp_len = u16::from_be_bytes(udp.len) as u32;
    let mut sum = ipv6_pseudo(src, dst, udp_len, IPPROTO_UDP);
    sum += u16::from_be_bytes(udp.src) as u32;
    sum += u16::from_be_bytes(udp.dst) as u32;
    sum += udp_len;
    let v = inner.vtc_flow;
    sum += u16::from_be_bytes([v[0], v[1]]) as u32;
    sum += u16::from_be_bytes([v[2], v[3]]) as u32;
    sum += u16::from_be_bytes([inner.next_hdr, inner.hop_limit]) as u32;
    // Minus the next header: adding its one's complement.
    sum += (!(inner.next_hdr as u16)) as u32;
    match finish(sum) {
        // A computed 0 is sent as all ones (RFC 768): 0 means "no checksum".
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The example of RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(add_bytes(0, &data)), !0xddf2);
    }

    #[test]
    fn known_ipv4_header() {
        // A header captured from the wire (checksum 0xb861 is the well-known example).
        let raw: [u8; 20] = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(finish(add_bytes(0, &raw)), 0xb861);
    }

    #[test]
    fn odd_length_pads() {
        assert_eq!(add_bytes(0, &[0x12]), 0x1200);
    }

    #[test]
    fn gue_v6_equals_the_checksum_over_the_whole_datagram() {
        use crate::headers::IPPROTO_TCP;
        // An inner IPv6 TCP segment with its checksum filled in the long way.
        let (isrc, idst) = (
            [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            [0xfd; 16],
        );
        let mut seg = std::vec![0u8; 20];
        seg[0..4].copy_from_slice(&[0xc3, 0x50, 0, 80]);
        seg[12] = 0x50;
        seg[13] = 0x18;
        seg.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n odd");
        let c = finish(add_bytes(
            ipv6_pseudo(&isrc, &idst, seg.len() as u32, IPPROTO_TCP),
            &seg,
        ));
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        for (tc_flow, hop) in [([0x60, 0, 0, 0], 64u8), ([0x6b, 0x8a, 0xbc, 0xde], 1)] {
            let inner = Ipv6Hdr {
                vtc_flow: tc_flow,
                payload_len: (seg.len() as u16).to_be_bytes(),
                next_hdr: IPPROTO_TCP,
                hop_limit: hop,
                src: isrc,
                dst: idst,
            };
            let (osrc, odst) = ([0xfc; 16], [0x20; 16]);
            let udp = UdpHdr {
                src: 0xd00du16.to_be_bytes(),
                dst: 6080u16.to_be_bytes(),
                len: ((8 + 40 + seg.len()) as u16).to_be_bytes(),
                check: [0, 0],
            };
            // The long way: the UDP header, the inner header and the segment.
            // SAFETY: both are repr(C) byte structs.
            let (uh, ih): (&[u8; 8], &[u8; 40]) = unsafe {
                (
                    &*(&udp as *const UdpHdr as *const [u8; 8]),
                    &*(&inner as *const Ipv6Hdr as *const [u8; 40]),
                )
            };
            let mut datagram = uh.to_vec();
            datagram.extend_from_slice(ih);
            datagram.extend_from_slice(&seg);
            let long = finish(add_bytes(
                ipv6_pseudo(&osrc, &odst, datagram.len() as u32, IPPROTO_UDP),
                &datagram,
            ));
            assert_eq!(gue_v6(&osrc, &odst, &udp, &inner), long);
        }
    }
}
