//! Maglev lookup-table sizing.
//!
//! Maglev needs a prime table size M so that every server's permutation (offset + j ×
//! skip mod M) visits every slot, and M much larger than the number of servers N so that
//! servers get close to equal shares: with M ≥ 100·N the imbalance stays within about
//! 1% (Maglev paper, section 5.3). The sizing rules live here because they are
//! configuration rules; primality is `ricochet_maglev`'s, so the configuration accepts
//! exactly the sizes the table builder does.

/// Default table size: the prime the Maglev paper uses for small pools.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// Minimum number of table slots per server.
pub const SLOTS_PER_SERVER: u32 = 100;

/// Largest accepted table size, the largest prime below 2^20.
///
/// A changed table is written to a fresh region before its service switches over, so the
/// data plane holds a table and its replacement at once; at this size both fit in
/// `ricochet_common::limits::DEFAULT_MAGLEV_SLOTS` (4 × 65537 × 8 slots). It also caps a
/// pool at `MAX_TABLE_SIZE / SLOTS_PER_SERVER` = 10485 servers.
pub const MAX_TABLE_SIZE: u32 = 1_048_573;

/// Largest number of servers a pool may hold (100 slots each within [`MAX_TABLE_SIZE`]).
pub const MAX_SERVERS_PER_POOL: usize = (MAX_TABLE_SIZE / SLOTS_PER_SERVER) as usize;

/// Whether `n` is prime: the Maglev crate's test, so configuration and table builder
/// agree on what a valid size is.
pub use ricochet_maglev::is_prime;

/// The smallest prime `>= n`, or `None` if there is none in `u32`.
pub fn next_prime(n: u32) -> Option<u32> {
    (n <= ricochet_maglev::LARGEST_PRIME).then(|| ricochet_maglev::next_prime(n))
}

/// The smallest acceptable table size for `servers` servers: `SLOTS_PER_SERVER × servers`,
/// saturating.
pub fn min_table_size(servers: usize) -> u32 {
    u32::try_from(servers)
        .unwrap_or(u32::MAX)
        .saturating_mul(SLOTS_PER_SERVER)
}

/// The default table size for a pool of `servers` servers: [`DEFAULT_TABLE_SIZE`], or the
/// first prime at or above `100 × servers` if that is larger.
pub fn default_table_size(servers: usize) -> u32 {
    let min = min_table_size(servers);
    if min <= DEFAULT_TABLE_SIZE {
        DEFAULT_TABLE_SIZE
    } else {
        // Only absurd pools (over 42 million servers) have no prime above their minimum;
        // validation refuses them long before.
        next_prime(min).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_table_size_is_the_largest_prime_below_2_pow_20() {
        assert!(is_prime(MAX_TABLE_SIZE));
        assert!(((MAX_TABLE_SIZE + 1)..(1 << 20)).all(|n| !is_prime(n)));
    }

    #[test]
    fn next_prime_values() {
        assert_eq!(next_prime(0), Some(2));
        assert_eq!(next_prime(65_536), Some(65_537));
        assert_eq!(next_prime(65_537), Some(65_537));
        assert_eq!(next_prime(70_000), Some(70_001));
        assert_eq!(next_prime(4_294_967_292), None);
    }

    #[test]
    fn default_sizes() {
        assert_eq!(default_table_size(0), 65_537);
        assert_eq!(default_table_size(2), 65_537);
        assert_eq!(default_table_size(655), 65_537);
        // 656 servers need 65600 slots: the next prime is 65609.
        assert_eq!(default_table_size(656), 65_609);
        assert_eq!(default_table_size(700), 70_001);
        assert_eq!(default_table_size(MAX_SERVERS_PER_POOL), 1_048_507);
        assert!(default_table_size(MAX_SERVERS_PER_POOL) <= MAX_TABLE_SIZE);
    }
}
