//! The VIP filter (`VIP_FILTER`): a bitmap over a hash of destination addresses that
//! lets the load balancer pass a packet to an address that is not a VIP without a hash
//! map lookup.
//!
//! The engine sets the bit of every VIP ([`set`]); a clear bit proves that an address
//! is not a VIP, a set one only that it may be (several addresses share a bit: a
//! *false positive* then costs the exact lookups, never a different verdict). The
//! filter is an array map of [`WORDS`] 64-bit words, so the kernel reads one word with
//! an inlined array lookup. Its size is fixed (not a load-time capacity): with the
//! default 4,096 VIPs at most 1 bit in 16 is set.

use crate::FAMILY_V4;

/// 64-bit words of the filter (entries of the `VIP_FILTER` array).
pub const WORDS: u32 = 1024;
/// Bits of the filter: [`bit`] answers `0..BITS`.
pub const BITS: u32 = WORDS * 64;
const INDEX_BITS: u32 = BITS.trailing_zeros();
const _: () = assert!(BITS.is_power_of_two());

/// Fibonacci hashing: the top [`INDEX_BITS`] bits of the product depend on every bit
/// of the address word, so neighbouring VIPs land on unrelated bits.
#[inline(always)]
const fn index_of(x: u32) -> u32 {
    x.wrapping_mul(0x9e37_79b1) >> (32 - INDEX_BITS)
}

/// The filter bit of IPv4 address `a` (network byte order).
#[inline(always)]
pub const fn bit_v4(a: [u8; 4]) -> u32 {
    index_of(u32::from_le_bytes(a))
}

#[inline(always)]
const fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
}

/// The filter bit of IPv6 address `a`: its four words folded, each rotated so that
/// addresses differing by a swap of words differ.
#[inline(always)]
pub const fn bit_v6(a: &[u8; 16]) -> u32 {
    index_of(
        word(a, 0)
            ^ word(a, 4).rotate_left(8)
            ^ word(a, 8).rotate_left(16)
            ^ word(a, 12).rotate_left(24),
    )
}

/// The filter bit of `addr` in the 16-byte map form (IPv4 in the first four bytes)
/// with family tag `family`: [`bit_v4`] or [`bit_v6`].
#[inline(always)]
pub const fn bit(addr: &[u8; 16], family: u8) -> u32 {
    if family == FAMILY_V4 {
        bit_v4([addr[0], addr[1], addr[2], addr[3]])
    } else {
        bit_v6(addr)
    }
}

/// The word holding filter bit `bit` and the bit's mask in it.
#[inline(always)]
pub const fn word_and_mask(bit: u32) -> (u32, u64) {
    (bit / 64, 1 << (bit % 64))
}

/// Sets the bit of `addr` (map form, `family`) in `words` (a whole filter).
///
/// # Panics
/// If `words` is shorter than [`WORDS`].
pub fn set(words: &mut [u64], addr: &[u8; 16], family: u8) {
    let (w, mask) = word_and_mask(bit(addr, family));
    words[w as usize] |= mask;
}

/// Whether the bit of `addr` is set in `words` (a whole filter).
pub fn contains(words: &[u64], addr: &[u8; 16], family: u8) -> bool {
    let (w, mask) = word_and_mask(bit(addr, family));
    words.get(w as usize).is_some_and(|x| x & mask != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FAMILY_V6;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    #[test]
    fn the_bit_of_an_address_is_pinned() {
        // The kernel and the engine compute the same bit: the function is the format.
        assert_eq!(bit_v4([192, 168, 35, 241]), 0x55aa);
        assert_eq!(bit(&v4([192, 168, 35, 241]), FAMILY_V4), 0x55aa);
        let vip6 = [0xfc, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x4a];
        assert_eq!(bit_v6(&vip6), bit(&vip6, FAMILY_V6));
        assert_eq!(bit_v6(&vip6), 0x6db9);
        assert!((0..=u8::MAX).all(|x| bit_v4([10, 0, 0, x]) < BITS));
    }

    #[test]
    fn neighbouring_addresses_spread_over_the_filter() {
        // 4,096 VIPs of one /20 (the default capacity) set nearly 4,096 distinct bits.
        let mut words = [0u64; WORDS as usize];
        for i in 0..4096u32 {
            let [_, _, c, d] = i.to_be_bytes();
            set(&mut words, &v4([10, 1, c, d]), FAMILY_V4);
        }
        let set_bits: u32 = words.iter().map(|w| w.count_ones()).sum();
        assert!(set_bits > 3900, "{set_bits} distinct bits");
        assert!(contains(&words, &v4([10, 1, 15, 255]), FAMILY_V4));
        assert!(!contains(
            &[0; WORDS as usize],
            &v4([10, 1, 0, 1]),
            FAMILY_V4
        ));
    }

    #[test]
    fn words_and_masks_cover_every_bit_once() {
        assert_eq!(word_and_mask(0), (0, 1));
        assert_eq!(word_and_mask(63), (0, 1 << 63));
        assert_eq!(word_and_mask(64), (1, 1));
        assert_eq!(word_and_mask(BITS - 1), (WORDS - 1, 1 << 63));
    }
}
