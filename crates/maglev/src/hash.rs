//! The key hash behind every backend's permutation: XXH64.
//!
//! XXH64 (Yann Collet's xxHash, 64-bit variant) is a published, frozen algorithm with
//! reference test vectors, so the outputs here can be checked against any other
//! implementation and never depend on the Rust version (unlike `std`'s `RandomState` or
//! `DefaultHasher`, whose algorithm is unspecified). Speed does not matter much: a table
//! build hashes each key twice.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// XXH64 of `data` with `seed`, as specified by the xxHash project.
///
/// Part of the crate's stability promise: the outputs are pinned by tests against the
/// reference vectors.
#[must_use]
pub fn key_hash(data: &[u8], seed: u64) -> u64 {
    let mut rest = data;
    let mut h = if data.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while let Some((stripe, tail)) = rest.split_first_chunk::<32>() {
            for (acc, lane) in v.iter_mut().zip(stripe.chunks_exact(8)) {
                *acc = round(*acc, read_u64(lane));
            }
            rest = tail;
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for acc in v {
            h = merge_round(h, acc);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };

    h = h.wrapping_add(data.len() as u64);

    while let Some((lane, tail)) = rest.split_first_chunk::<8>() {
        h ^= round(0, u64::from_le_bytes(*lane));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = tail;
    }
    if let Some((lane, tail)) = rest.split_first_chunk::<4>() {
        h ^= u64::from(u32::from_le_bytes(*lane)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = tail;
    }
    for &byte in rest {
        h ^= u64::from(byte).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }

    avalanche(h)
}

fn read_u64(lane: &[u8]) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(lane);
    u64::from_le_bytes(bytes)
}

fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge_round(h: u64, acc: u64) -> u64 {
    (h ^ round(0, acc)).wrapping_mul(P1).wrapping_add(P4)
}

fn avalanche(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::key_hash;

    /// Reference XXH64 outputs for the bytes `b'0'`, `b'1'`, ... (ascending from 0x30)
    /// of length `len`, with seed 0 and with seed `0x1234_5678_90ab_cdef`. The lengths
    /// cover every code path: the short-input start, the 32-byte stripes, and the
    /// 8-byte, 4-byte and 1-byte tails.
    const SEED: u64 = 0x1234_5678_90ab_cdef;
    const VECTORS: &[(u8, u64, u64)] = &[
        (0, 0xef46_db37_51d8_e999, 0xa2f5_c44d_0f46_c872),
        (1, 0x6334_5708_1244_afec, 0xf47e_bf7f_5cb6_795b),
        (3, 0x1c2d_cb4b_9024_d73d, 0x8516_f202_e563_cd06),
        (4, 0x4c33_072b_4564_7dcb, 0xe19f_ff02_27e3_b861),
        (7, 0x97ee_4fe4_a0ff_4dfa, 0x281f_ef0a_4738_7bf4),
        (8, 0xe4ba_22a4_9ad8_9d3f, 0x5981_b4a4_e0a0_7d38),
        (12, 0x884e_66bb_5a00_411d, 0x9cc2_7b0d_b966_c216),
        (16, 0x6ff4_eb62_bcec_6586, 0xc16a_47e0_b097_08c8),
        (31, 0xc506_e230_1291_5790, 0xa2c0_eddf_7498_3bfe),
        (32, 0x96ee_2fa9_35fd_d556, 0x1396_bc2a_0093_8b77),
        (33, 0xa5cd_c694_0c6f_de9e, 0x65cd_9ed3_7dff_8753),
        (44, 0x05c5_5885_5548_ca3c, 0x559e_4ff9_0ac4_42e6),
        (63, 0x7daf_8f9f_dbd4_e518, 0x5c0d_c6ef_b801_d4fb),
        (64, 0x3fe6_27fa_bdb3_0aea, 0xd2ff_1b37_5057_1f15),
        (65, 0xeddc_e6ec_01f7_e595, 0xb0aa_81bc_38df_17b9),
    ];

    #[test]
    fn matches_reference_vectors() {
        for &(len, unseeded, seeded) in VECTORS {
            let data: Vec<u8> = (0..len).map(|i| b'0' + i).collect();
            let data = data.as_slice();
            assert_eq!(key_hash(data, 0), unseeded, "seed 0, length {len}");
            assert_eq!(key_hash(data, SEED), seeded, "seeded, length {len}");
        }
    }

    #[test]
    fn matches_other_published_outputs() {
        assert_eq!(key_hash(b"a", 0), 15_154_266_338_359_012_955);
        assert_eq!(key_hash(b"abc", 0), 0x44bc_2cf5_ad77_0999);
        assert_eq!(key_hash(b"ABC", 0), 0xe66a_e735_4fcf_ee98);
        assert_eq!(key_hash(b"xxhash", 0), 0x32dd_3895_2c4b_c720);
    }
}
