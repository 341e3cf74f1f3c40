//! The Internet checksum (RFC 1071) for tests and tools, written independently of the
//! kernel program's (`ricochet-ebpf`'s `csum`), so that one can check the other.

use std::net::IpAddr;

/// Adds `data` as big-endian 16-bit words (an odd last byte padded with zero) to the
/// running sum `acc`, without folding.
pub fn sum16(data: &[u8], acc: u32) -> u32 {
    let mut acc = u64::from(acc);
    for chunk in data.chunks(2) {
        acc += u64::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    // Folded back into 32 bits, so that the sum of any slice stays exact.
    while acc > u64::from(u32::MAX) {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a running sum to 16 bits and complements it: the checksum field's value.
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The Internet checksum of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    finish(sum16(data, 0))
}

/// The Internet checksum of `data` continuing a running sum `initial` (e.g. a
/// pseudo-header's).
pub fn internet_checksum_from(data: &[u8], initial: u32) -> u16 {
    finish(sum16(data, initial))
}

/// Whether `data`, checksum field included, sums to all ones (a correct checksum).
pub fn verifies(data: &[u8]) -> bool {
    internet_checksum(data) == 0
}

/// The TCP/UDP/ICMPv6 checksum of `segment` (its checksum field zero) between `src` and
/// `dst`: over the IPv4 (RFC 793) or IPv6 (RFC 8200 §8.1) pseudo-header, then the
/// segment. A UDP checksum that computes to 0 is sent as 0xffff (RFC 768).
pub fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed families"),
    }
    let c = finish(sum16(segment, sum16(&pseudo, 0)));
    if c == 0 && proto == 17 {
        0xffff
    } else {
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        let mut with_sum = data.to_vec();
        with_sum.extend_from_slice(&internet_checksum(&data).to_be_bytes());
        assert!(verifies(&with_sum));
    }

    #[test]
    fn odd_length_pads_with_zero_and_initial_continues_the_sum() {
        assert_eq!(internet_checksum(&[0xab]), internet_checksum(&[0xab, 0]));
        let (a, b) = ([1u8, 2, 3, 4], [5u8, 6, 7, 8]);
        assert_eq!(
            internet_checksum_from(&b, sum16(&a, 0)),
            internet_checksum(&[a, b].concat())
        );
    }

    #[test]
    fn long_inputs_do_not_overflow() {
        // 200,000 words of 0xffff overflow a 32-bit accumulator of unfolded words.
        let data = vec![0xff; 400_000];
        assert_eq!(internet_checksum(&data), 0);
        assert_eq!(internet_checksum(&vec![0; 1001]), 0xffff);
    }
}
