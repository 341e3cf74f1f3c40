//! Primality for table sizes: Maglev's permutations cover every slot only when the table
//! size is prime.

/// The largest prime that fits in a `u32` (2^32 − 5).
pub const LARGEST_PRIME: u32 = 4_294_967_291;

/// Whether `n` is prime.
///
/// Deterministic Miller–Rabin with the bases 2, 7 and 61, which is exact for every
/// `n < 4_759_123_141` and so for every `u32`.
#[must_use]
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2, 3, 5, 7, 11, 13, 61] {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let n = u64::from(n);
    let (mut d, mut s) = (n - 1, 0);
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    [2, 7, 61].into_iter().all(|base| {
        let mut x = pow_mod(base, d, n);
        if x == 1 || x == n - 1 {
            return true;
        }
        for _ in 1..s {
            x = x * x % n;
            if x == n - 1 {
                return true;
            }
        }
        false
    })
}

/// The smallest prime `>= n`.
///
/// # Panics
///
/// If `n > LARGEST_PRIME`, since no larger prime fits in a `u32`.
#[must_use]
pub fn next_prime(n: u32) -> u32 {
    assert!(
        n <= LARGEST_PRIME,
        "no prime >= {n} fits in a u32 (the largest is {LARGEST_PRIME})"
    );
    (n..=LARGEST_PRIME)
        .find(|&candidate| is_prime(candidate))
        .expect("LARGEST_PRIME is prime and within the range")
}

/// `base^exp mod m` for `m < 2^32`, so every product fits in a `u64`.
fn pow_mod(base: u64, mut exp: u64, m: u64) -> u64 {
    let mut base = base % m;
    let mut result = 1;
    while exp > 0 {
        if exp & 1 == 1 {
            result = result * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sieve of Eratosthenes: an independent oracle for small `n`.
    fn sieve(limit: usize) -> Vec<bool> {
        let mut prime = vec![true; limit + 1];
        prime[0] = false;
        prime[1] = false;
        let mut i = 2;
        while i * i <= limit {
            if prime[i] {
                (i * i..=limit).step_by(i).for_each(|j| prime[j] = false);
            }
            i += 1;
        }
        prime
    }

    #[test]
    fn agrees_with_a_sieve() {
        let oracle = sieve(200_000);
        for (n, &expected) in oracle.iter().enumerate() {
            let n = u32::try_from(n).unwrap();
            assert_eq!(is_prime(n), expected, "is_prime({n})");
        }
    }

    #[test]
    fn known_values() {
        for p in [65_537, 655_373, 2_147_483_647, LARGEST_PRIME] {
            assert!(is_prime(p), "{p} is prime");
        }
        // 3215031751 = 151 · 751 · 28351 is a strong pseudoprime to bases 2, 3, 5 and 7,
        // so only the base 61 rejects it.
        for c in [
            3_215_031_751,
            561,
            4_294_967_293,
            4_294_967_295,
            65_535,
            655_371,
        ] {
            assert!(!is_prime(c), "{c} is composite");
        }
    }

    #[test]
    fn next_prime_is_smallest_prime_at_or_above() {
        assert_eq!(next_prime(0), 2);
        assert_eq!(next_prime(2), 2);
        assert_eq!(next_prime(14), 17);
        assert_eq!(next_prime(65_537), 65_537);
        assert_eq!(next_prime(65_538), 65_539);
        assert_eq!(next_prime(100_000), 100_003);
        assert_eq!(next_prime(655_370), 655_373);
        assert_eq!(next_prime(4_294_967_280), LARGEST_PRIME);
        assert_eq!(next_prime(LARGEST_PRIME), LARGEST_PRIME);
    }

    #[test]
    #[should_panic(expected = "no prime >=")]
    fn next_prime_beyond_u32_panics() {
        let _ = next_prime(LARGEST_PRIME + 1);
    }
}
