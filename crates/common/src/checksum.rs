//! The Internet checksum (RFC 1071) for userspace packets the product builds itself (the
//! engine's neighbour probes, the health monitors' ICMP echoes). The kernel program has its
//! own incremental helpers (`ricochet-ebpf`'s `csum`), and the tests check both against the
//! test kit's independent one.

/// The ones' complement of the ones' complement sum of `data`'s big-endian 16-bit words
/// (an odd last byte padded with zero): the value of a checksum field that was zero.
pub fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for chunk in data.chunks(2) {
        sum += u64::from(u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example_and_odd_lengths() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(
            internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        assert_eq!(internet_checksum(&[0xff]), !0xff00);
        assert_eq!(internet_checksum(&[]), 0xffff);
        // A message with its checksum in place sums to zero.
        let mut msg = [8u8, 0, 0, 0, 0x52, 0x43, 0, 1, b'r'];
        let c = internet_checksum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(internet_checksum(&msg), 0);
    }
}
