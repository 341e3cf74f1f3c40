//! Golden values: any change to the key hash, the seeds, the permutation, the turn order
//! or the tie-break fails here. Such a change reshuffles established flows on upgrade, so
//! it must be deliberate, and these values updated with a note in the changelog.
//!
//! The values were produced by this crate and checked against a separate, naive model
//! of the algorithm (exact fractions for the turn times, a linear scan instead of the
//! heap, and an independent XXH64 checked against the reference vectors).

use ricochet_maglev::{build, key_hash, Backend, OFFSET_SEED, SKIP_SEED};

const KEYS: [&[u8]; 3] = [b"192.168.33.10:80", b"192.168.34.10:80", b"10.0.0.1:80"];

fn backends(weights: [u32; 3]) -> Vec<Backend<'static>> {
    KEYS.iter()
        .zip(weights)
        .map(|(key, weight)| Backend::new(key, weight))
        .collect()
}

/// XXH64 of the table's entries as little-endian `u32`s.
fn checksum(table: &[u32]) -> u64 {
    let bytes: Vec<u8> = table.iter().flat_map(|entry| entry.to_le_bytes()).collect();
    key_hash(&bytes, 0)
}

#[test]
fn seeds() {
    assert_eq!(OFFSET_SEED, 0x6666_6f2d_766c_676d);
    assert_eq!(SKIP_SEED, 0x706b_732d_766c_676d);
}

#[test]
fn key_hashes() {
    let expected = [
        (0x2250_e46f_7057_0a76, 0x6c77_5e95_1583_10b9),
        (0xbe8b_777d_4742_0095, 0xe887_125e_bdea_65d0),
        (0x3767_96d8_3fa8_246b, 0x32d2_f342_1f83_a50a),
    ];
    for (key, (offset, skip)) in KEYS.iter().zip(expected) {
        let name = String::from_utf8_lossy(key);
        assert_eq!(key_hash(key, OFFSET_SEED), offset, "offset hash of {name}");
        assert_eq!(key_hash(key, SKIP_SEED), skip, "skip hash of {name}");
    }
}

#[test]
fn thirteen_slots() {
    assert_eq!(
        build(&backends([1, 1, 1]), 13).unwrap(),
        [0, 1, 0, 1, 0, 1, 2, 2, 2, 2, 1, 0, 2]
    );
    assert_eq!(
        build(&backends([1, 2, 3]), 13).unwrap(),
        [2, 1, 0, 1, 2, 1, 2, 2, 2, 2, 1, 0, 2]
    );
}

#[test]
fn default_size_equal_weights() {
    let table = build(&backends([1, 1, 1]), 65_537).unwrap();
    assert_eq!(
        table[..20],
        [0, 0, 0, 0, 2, 2, 1, 0, 1, 2, 2, 0, 1, 1, 0, 2, 2, 1, 0, 1]
    );
    assert_eq!(checksum(&table), 0xc10c_8502_0a07_8bea);
}

#[test]
fn default_size_weights_1_2_3() {
    let table = build(&backends([1, 2, 3]), 65_537).unwrap();
    assert_eq!(
        table[..20],
        [1, 0, 2, 0, 2, 2, 1, 0, 2, 2, 2, 1, 1, 1, 0, 2, 2, 1, 1, 1]
    );
    assert_eq!(checksum(&table), 0x7470_1688_f918_4964);
}

#[test]
fn twenty_backends_mixed_weights() {
    // Weights 0 to 4, so ties between different weights and drained servers are covered.
    let keys: Vec<String> = (0..20)
        .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256))
        .collect();
    let backends: Vec<_> = keys
        .iter()
        .zip((0..5).cycle())
        .map(|(key, weight)| Backend::new(key.as_bytes(), weight))
        .collect();
    let table = build(&backends, 4_099).unwrap();
    assert_eq!(
        table[..20],
        [14, 13, 18, 19, 19, 14, 1, 7, 11, 8, 14, 2, 2, 4, 9, 14, 19, 7, 7, 16]
    );
    assert_eq!(checksum(&table), 0x5482_70bf_6a62_fcfd);
}
