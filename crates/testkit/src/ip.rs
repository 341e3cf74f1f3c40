//! Hand-built IP packets (no Ethernet header), for tests that send through raw sockets:
//! every checksum filled in by [`crate::checksum`], nothing taken from the code under
//! test. For whole frames with every header knob, see [`crate::packets`].

use std::net::{IpAddr, SocketAddr};

use crate::checksum::{internet_checksum as checksum, l4_checksum};

/// An IP packet (v4 or v6 by the addresses) carrying `segment` of protocol `proto`, with
/// every checksum filled in.
fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, mut segment: Vec<u8>, csum_at: usize) -> Vec<u8> {
    let c = l4_checksum(src, dst, proto, &segment);
    segment[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = (20 + segment.len()) as u16;
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h.extend_from_slice(&segment);
            h
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(segment.len() as u16).to_be_bytes());
            h.extend_from_slice(&[proto, 64]);
            h.extend_from_slice(&s.octets());
            h.extend_from_slice(&d.octets());
            h.extend_from_slice(&segment);
            h
        }
        _ => panic!("mixed families"),
    }
}

/// A UDP datagram `src` → `dst` as an IP packet.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&src.port().to_be_bytes());
    u.extend_from_slice(&dst.port().to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    ip_packet(src.ip(), dst.ip(), 17, u, 6)
}

/// A TCP SYN `src` → `dst` with sequence number `seq`, as an IP packet.
pub fn tcp_syn_packet(src: SocketAddr, dst: SocketAddr, seq: u32) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&src.port().to_be_bytes());
    t.extend_from_slice(&dst.port().to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    // Data offset 6 words (one option), SYN, window, checksum, urgent pointer.
    t.extend_from_slice(&[0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    // MSS 1400.
    t.extend_from_slice(&[2, 4, 0x05, 0x78]);
    ip_packet(src.ip(), dst.ip(), 6, t, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_builders_checksum_like_the_rfc_example() {
        // RFC 1071-style example header (Wikipedia's "IPv4 header checksum"): checksum 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        // A built packet verifies to zero over its header, and over pseudo header + segment.
        let p = udp_packet(
            "192.168.11.2:40000".parse().unwrap(),
            "192.168.35.241:5353".parse().unwrap(),
            b"ping",
        );
        assert_eq!(checksum(&p[..20]), 0);
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17, 0, 12]);
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(checksum(&pseudo), 0);
    }
}
