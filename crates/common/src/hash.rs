//! The flow hash that maps a client to a Maglev slot.
//!
//! It runs in the XDP program for every new flow and in userspace for tests and
//! tooling, so it is plain integer arithmetic with no tables and no loops the verifier
//! must unroll beyond four words. It is MurmurHash3's 32-bit mixing applied to the
//! 16-byte address words and the port; the exact function is pinned by golden values
//! below because changing it would move every client to another server on upgrade.

#[inline(always)]
fn mix(mut h: u32, mut k: u32) -> u32 {
    k = k.wrapping_mul(0xcc9e_2d51);
    k = k.rotate_left(15);
    k = k.wrapping_mul(0x1b87_3593);
    h ^= k;
    h = h.rotate_left(13);
    h.wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hash of a client: its 16-byte address (IPv4 in the first four bytes, the rest zero)
/// and, when `with_port`, its source port (big-endian bytes as on the wire).
#[inline(always)]
pub fn client_hash(src: &[u8; 16], sport: [u8; 2], with_port: bool, seed: u32) -> u32 {
    let h = address_state(src, seed);
    if with_port {
        with_port_of(h, sport)
    } else {
        finish(h, 16)
    }
}

/// `client_hash` without and with the port, for the price of one address hash (the
/// two share it): the data plane needs both when a service hashes on the address only
/// and the packet also needs the flow's hash (the IPv6 flow label, the GUE source port).
#[inline(always)]
pub fn client_hashes(src: &[u8; 16], sport: [u8; 2], seed: u32) -> (u32, u32) {
    let h = address_state(src, seed);
    (finish(h, 16), with_port_of(h, sport))
}

/// The mixing state after the address's four words.
#[inline(always)]
fn address_state(src: &[u8; 16], seed: u32) -> u32 {
    let w0 = u32::from_le_bytes([src[0], src[1], src[2], src[3]]);
    let w1 = u32::from_le_bytes([src[4], src[5], src[6], src[7]]);
    let w2 = u32::from_le_bytes([src[8], src[9], src[10], src[11]]);
    let w3 = u32::from_le_bytes([src[12], src[13], src[14], src[15]]);
    let mut h = mix(seed, w0);
    h = mix(h, w1);
    h = mix(h, w2);
    mix(h, w3)
}

#[inline(always)]
fn with_port_of(h: u32, sport: [u8; 2]) -> u32 {
    finish(mix(h, u16::from_be_bytes(sport) as u32), 18)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    #[test]
    fn port_changes_hash_only_when_asked() {
        let a = v4([192, 168, 11, 2]);
        assert_eq!(
            client_hash(&a, [0, 80], false, 0),
            client_hash(&a, [1, 80], false, 0)
        );
        assert_ne!(
            client_hash(&a, [0, 80], true, 0),
            client_hash(&a, [1, 80], true, 0)
        );
    }

    #[test]
    fn both_hashes_at_once_are_the_two_hashes() {
        let mut b = [0u8; 16];
        b[0] = 0xfc;
        b[15] = 9;
        for (a, port, seed) in [(b, [0, 53], 0x5eed), (v4([10, 1, 2, 3]), [0xc5, 0xec], 7)] {
            assert_eq!(
                client_hashes(&a, port, seed),
                (
                    client_hash(&a, port, false, seed),
                    client_hash(&a, port, true, seed)
                )
            );
        }
    }

    #[test]
    fn seed_changes_hash() {
        let a = v4([192, 168, 11, 2]);
        assert_ne!(
            client_hash(&a, [0, 0], false, 0),
            client_hash(&a, [0, 0], false, 1)
        );
    }

    /// Golden values: if this test fails, the hash changed and an upgrade would move
    /// clients between servers. Change it only deliberately.
    #[test]
    fn golden_values() {
        let a = v4([192, 168, 11, 2]);
        let mut b = [0u8; 16];
        b[0] = 0xfc;
        b[2] = 0x11;
        b[15] = 2;
        let got = [
            client_hash(&a, [0xc5, 0xec], false, 0),
            client_hash(&a, [0xc5, 0xec], true, 0),
            client_hash(&b, [0, 53], true, 0x5eed),
            client_hash(&[0; 16], [0, 0], false, 0),
        ];
        assert_eq!(got, GOLDEN, "client_hash changed: {got:#010x?}");
    }
    const GOLDEN: [u32; 4] = [0x2388_9c91, 0x6f74_f8f4, 0xc076_31cd, 0x8134_cdf8];
}
