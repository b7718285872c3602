//! The crate's 64-bit hash, used for request keys and for hash-ring points.
//!
//! Why not `std`'s `DefaultHasher`: its SipHash is keyed per process in `RandomState`
//! and, even with fixed keys, its output is explicitly not stable across Rust releases.
//! The ring must put the same node address on the same points in every snapshot and every
//! proxy instance, so the hash has to be a fixed function we own. Why not a crate: this is
//! forty lines, and the crate stays dependency-free.
//!
//! The algorithm is wyhash (final version 4 by Wang Yi, public domain), written out here:
//! the input is read as little-endian 64-bit words, each pair of words is folded in with a
//! 64×64→128-bit multiply whose halves are XORed together ("mum"), and the result goes
//! through one more mum with the length mixed in. A full multiply per 16 bytes makes it
//! both fast on the short keys a proxy sees (an IP, a cookie value, a path) and well
//! distributed in every output bit, which the ring needs because it compares whole
//! 64-bit values. It is not a cryptographic hash: a client who can choose keys can make
//! them collide, which at worst concentrates that client's own requests on one node.

/// The four default wyhash secrets (odd, with balanced bits).
const S0: u64 = 0x2d35_8dcc_aa6c_78a5;
const S1: u64 = 0x8bb8_4b93_962e_acc9;
const S2: u64 = 0x4b33_a62e_d433_d4a3;
const S3: u64 = 0x4d5a_2da5_1de1_aa47;

/// 64×64→128-bit multiply, returned as (low, high).
#[inline(always)]
fn mum(a: u64, b: u64) -> (u64, u64) {
    let r = u128::from(a) * u128::from(b);
    (r as u64, (r >> 64) as u64)
}

/// The wyhash mixing step: multiply and fold the two halves together.
#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let (lo, hi) = mum(a, b);
    lo ^ hi
}

// The readers below take a slice and an offset. Every call site computes offsets from
// the input length so that they are in bounds (see the comments there); slicing keeps
// that checked rather than assumed.

#[inline(always)]
fn r8(s: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(b)
}

#[inline(always)]
fn r4(s: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&s[at..at + 4]);
    u64::from(u32::from_le_bytes(b))
}

/// Hash `bytes` to a well-distributed 64-bit value. Stable: the same bytes give the same
/// value on every platform, in every process and in every version of this crate.
///
/// The proxy uses it to turn a request's hash key (client IP, header, cookie, path) into
/// [`PickContext::hash`](crate::PickContext::hash).
#[inline]
pub fn hash_key(bytes: &[u8]) -> u64 {
    hash_key_seeded(bytes, 0)
}

/// [`hash_key`] with a seed: different seeds give independent-looking functions. The
/// hash ring uses the replica number as the seed to place a node's virtual points.
pub fn hash_key_seeded(bytes: &[u8], seed: u64) -> u64 {
    let len = bytes.len();
    let mut seed = seed ^ mix(seed ^ S0, S1);
    let (mut a, mut b);
    if len <= 16 {
        if len >= 4 {
            // Two overlapping pairs of 4-byte reads cover any length in 4..=16: the first
            // read starts at 0 and at `(len / 8) * 4` (0 or 4, plus 4 ≤ len), the second
            // ends at `len` and at `len - (len / 8) * 4` (≥ 4 since len ≥ 8 when it is 4).
            let q = (len >> 3) << 2;
            a = (r4(bytes, 0) << 32) | r4(bytes, q);
            b = (r4(bytes, len - 4) << 32) | r4(bytes, len - 4 - q);
        } else if len > 0 {
            // 1..=3 bytes: first, middle and last byte (indices < len).
            a = (u64::from(bytes[0]) << 16)
                | (u64::from(bytes[len >> 1]) << 8)
                | u64::from(bytes[len - 1]);
            b = 0;
        } else {
            a = 0;
            b = 0;
        }
    } else {
        let mut p = 0usize;
        let mut rest = len;
        if rest >= 48 {
            // Three independent lanes so the multiplies pipeline on long inputs.
            let mut see1 = seed;
            let mut see2 = seed;
            while rest >= 48 {
                seed = mix(r8(bytes, p) ^ S1, r8(bytes, p + 8) ^ seed);
                see1 = mix(r8(bytes, p + 16) ^ S2, r8(bytes, p + 24) ^ see1);
                see2 = mix(r8(bytes, p + 32) ^ S3, r8(bytes, p + 40) ^ see2);
                p += 48;
                rest -= 48;
            }
            seed ^= see1 ^ see2;
        }
        while rest > 16 {
            seed = mix(r8(bytes, p) ^ S1, r8(bytes, p + 8) ^ seed);
            p += 16;
            rest -= 16;
        }
        // The last 16 bytes of the input, overlapping what was already consumed when
        // fewer than 16 remain; len > 16 so `len - 16` does not underflow.
        a = r8(bytes, len - 16);
        b = r8(bytes, len - 8);
    }
    a ^= S1;
    b ^= seed;
    (a, b) = mum(a, b);
    mix(a ^ S0 ^ len as u64, b ^ S1)
}

/// A fast bijective 64-bit finalizer (the splitmix64 / Stafford "mix13" finalizer): every
/// input bit affects every output bit. Used to derive secondary per-key values (slow-start
/// admission, rendezvous fallback) from an existing hash without hashing bytes again.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Map a 64-bit value to a float in `[0, 1)` using its top 53 bits.
#[inline]
pub(crate) fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn deterministic_and_length_sensitive() {
        assert_eq!(hash_key(b"10.0.0.1:80"), hash_key(b"10.0.0.1:80"));
        assert_ne!(hash_key(b""), hash_key(b"\0"));
        assert_ne!(hash_key(b"\0"), hash_key(b"\0\0"));
        assert_ne!(hash_key(b"a"), hash_key(b"b"));
        assert_ne!(hash_key_seeded(b"a", 0), hash_key_seeded(b"a", 1));
    }

    /// The reference test vectors of wyhash final 4 (message `i` hashed with seed `i`).
    /// They pin the output: the ring's placement must never change silently between
    /// releases, or every upgrade would reshuffle sticky sessions.
    #[test]
    fn matches_wyhash_reference_vectors() {
        let vectors: [(&str, u64); 7] = [
            ("", 0x93228a4de0eec5a2),
            ("a", 0xc5bac3db178713c4),
            ("abc", 0xa97f2f7b1d9b3314),
            ("message digest", 0x786d1f1df3801df4),
            ("abcdefghijklmnopqrstuvwxyz", 0xdca5a8138ad37c87),
            (
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                0xb9e734f117cfaf70,
            ),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                0x6cc5eab49a92d617,
            ),
        ];
        for (seed, (msg, want)) in vectors.iter().enumerate() {
            assert_eq!(
                hash_key_seeded(msg.as_bytes(), seed as u64),
                *want,
                "{msg:?}"
            );
        }
        assert_eq!(hash_key(b""), 0x93228a4de0eec5a2);
    }

    #[test]
    fn no_collisions_on_addresses() {
        let mut seen = HashSet::new();
        for a in 0..=255u32 {
            for port in [80u32, 443, 8080, 8443] {
                for c in 0..40u32 {
                    let key = format!("10.{c}.0.{a}:{port}");
                    assert!(seen.insert(hash_key(key.as_bytes())), "collision on {key}");
                }
            }
        }
    }

    /// Every bucket of the top 8 bits and of the bottom 8 bits gets its share of
    /// sequential keys: a chi-square-like bound far above chance.
    #[test]
    fn buckets_are_even() {
        const N: usize = 256 * 400;
        let mut hi = [0u32; 256];
        let mut lo = [0u32; 256];
        for i in 0..N {
            let h = hash_key(format!("user-{i}").as_bytes());
            hi[(h >> 56) as usize] += 1;
            lo[(h & 0xff) as usize] += 1;
        }
        for counts in [hi, lo] {
            let expected = (N / 256) as f64;
            let chi2: f64 = counts
                .iter()
                .map(|&c| (c as f64 - expected).powi(2) / expected)
                .sum();
            // 255 degrees of freedom: mean 255, sd ≈ 22.6; 400 is > 6 sd out.
            assert!(chi2 < 400.0, "chi2 = {chi2}");
        }
    }

    fn popcount_avalanche(input: &[u8]) -> f64 {
        let base = hash_key(input);
        let mut flips = 0u32;
        let mut n = 0u32;
        let mut buf = input.to_vec();
        for byte in 0..buf.len() {
            for bit in 0..8 {
                buf[byte] ^= 1 << bit;
                flips += (hash_key(&buf) ^ base).count_ones();
                buf[byte] ^= 1 << bit;
                n += 1;
            }
        }
        f64::from(flips) / f64::from(n)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Flipping any one input bit flips about half of the output bits on average.
        #[test]
        fn avalanche(input in proptest::collection::vec(any::<u8>(), 1..80)) {
            let avg = popcount_avalanche(&input);
            // With ≥ 8 single-bit flips averaged, the mean of 64 fair coin flips stays
            // well inside 32 ± 8.
            prop_assert!((24.0..40.0).contains(&avg), "avg flipped bits {avg}");
        }

        /// Inputs of every length reach every code path without panicking, and a change
        /// in any byte changes the hash.
        #[test]
        fn every_byte_matters(input in proptest::collection::vec(any::<u8>(), 1..120), at in any::<prop::sample::Index>(), delta in 1u8..=255) {
            let mut other = input.clone();
            let i = at.index(other.len());
            other[i] = other[i].wrapping_add(delta);
            prop_assert_ne!(hash_key(&input), hash_key(&other));
        }
    }

    #[test]
    fn mix64_is_not_identity_and_unit_in_range() {
        assert_ne!(mix64(1), 1);
        for x in [0u64, 1, u64::MAX, 0x8000_0000_0000_0000] {
            let u = unit_f64(mix64(x));
            assert!((0.0..1.0).contains(&u));
        }
        assert!(unit_f64(u64::MAX) < 1.0);
    }
}
