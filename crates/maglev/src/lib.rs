//! Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016).
//!
//! For each virtual service Ricochet builds a lookup table of prime size `M` whose
//! entries are indices into the service's list of backends. The XDP data plane picks a
//! server for a new flow as `table[flow_hash % M]`. [`build`] makes that table.
//!
//! # Algorithm
//!
//! Every backend derives a permutation of the slots `0..M` from its key alone:
//!
//! ```text
//! offset = key_hash(key, OFFSET_SEED) % M
//! skip   = key_hash(key, SKIP_SEED) % (M - 1) + 1
//! permutation[j] = (offset + j * skip) % M
//! ```
//!
//! Because `M` is prime and `1 <= skip < M`, each permutation visits every slot. Backends
//! then take turns; on its turn a backend claims the first slot of its permutation that
//! is still free, until the table is full. Since the permutations depend only on the
//! keys, adding or removing one backend leaves most slots with their owner: only the
//! removed backend's slots, plus a small fraction displaced by the changed sequence of
//! turns, move (with `M` about `100 N`, under 1% of the table beyond the removed share;
//! see `tests/properties.rs`).
//!
//! # Weights
//!
//! The paper gives every backend one turn per round. Ricochet generalises the rounds to
//! a virtual clock: a backend of weight `w` takes its `k`-th turn (`k = 1, 2, ...`) at
//! time `(k - 1/2) / w`, and turns are taken in time order (the Sainte-Laguë divisor
//! sequence, which favours neither heavy nor light backends). A backend of weight `w`
//! therefore claims slots at a rate proportional to `w`, and ends with about `M * w / W`
//! slots (`W` the total weight; the tests find every backend within two slots of it).
//! Ties, which with equal weights
//! happen at every step, go to the backend whose key sorts first (bytewise), so equal
//! weights reproduce the paper's round-robin exactly. The pending turns sit in a binary
//! heap, so a build costs `O(M log N)` for the turns plus the permutation probes (about
//! `M ln M` in total, each one bit of a bitmap of taken slots), whatever the weights;
//! memory is `O(M + N)`.
//!
//! Consequences worth relying on:
//!
//! - The slot-to-key mapping does not depend on the order of the backend list.
//! - A backend of weight 0 takes no turns and so is exactly equivalent to an absent one:
//!   draining a server by setting its weight to 0 moves the same slots as removing it.
//! - Scaling every weight by the same factor gives the same table.
//!
//! # Stability promise
//!
//! The table is a pure function of the backends' keys and weights and of `M`. The key
//! hash is XXH64 ([`key_hash`]), a frozen published algorithm implemented here (never
//! `std`'s unspecified hashers), with the seeds [`OFFSET_SEED`] and [`SKIP_SEED`]. Tests
//! pin the hash against reference vectors and pin whole tables, so an upgrade of Ricochet
//! or of Rust cannot silently reshuffle established flows. Callers must keep their key
//! encoding just as stable (for example the server's IP address bytes followed by its
//! port in network byte order).

mod hash;
mod prime;

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;

pub use hash::key_hash;
pub use prime::{is_prime, next_prime, LARGEST_PRIME};

/// The table size for pools of up to 655 backends: the prime 2^16 + 1.
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// How many slots per backend [`table_size_for`] provides at least. The paper recommends
/// `M >= 100 N` to keep every backend's share within about 1% of the average.
pub const SLOTS_PER_BACKEND: u32 = 100;

/// Seed of the key hash that gives a backend's offset (the ASCII bytes `mglv-off`).
pub const OFFSET_SEED: u64 = u64::from_le_bytes(*b"mglv-off");

/// Seed of the key hash that gives a backend's skip (the ASCII bytes `mglv-skp`).
pub const SKIP_SEED: u64 = u64::from_le_bytes(*b"mglv-skp");

/// One pool server as the table builder sees it.
///
/// A backend's identity drives its permutation, so a server keeps its slots no matter its
/// position in the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend<'a> {
    /// A stable, unique identity, for example the server's IP address bytes followed by
    /// its port in network byte order.
    pub key: &'a [u8],
    /// Relative share of the slots; 0 means the backend gets none (drained).
    pub weight: u32,
}

impl<'a> Backend<'a> {
    /// A backend with `key` and `weight`.
    #[must_use]
    pub const fn new(key: &'a [u8], weight: u32) -> Self {
        Self { key, weight }
    }
}

/// Why [`build`] could not make a table.
///
/// An empty pool ([`MaglevError::NoBackends`]) and a fully drained one
/// ([`MaglevError::ZeroTotalWeight`]) are errors rather than an empty table: the data
/// plane cannot index an empty table, so the caller must decide what the service does
/// without servers (typically mark it down and drop or reject its new flows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaglevError {
    /// The table size is not prime, so permutations would not cover every slot.
    NotPrime(u32),
    /// The backend list is empty.
    NoBackends,
    /// The table has fewer slots than there are backends.
    TooSmall {
        /// The requested table size.
        size: u32,
        /// The number of backends given.
        backends: usize,
    },
    /// Two backends share a key (their positions in the list).
    DuplicateKey {
        /// Position of the first backend with the key.
        first: usize,
        /// Position of the other backend with the same key.
        second: usize,
    },
    /// Every backend has weight 0.
    ZeroTotalWeight,
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotPrime(size) if size > LARGEST_PRIME => write!(
                f,
                "Maglev table size {size} is not prime (the largest prime table is \
                 {LARGEST_PRIME})"
            ),
            Self::NotPrime(size) => write!(
                f,
                "Maglev table size {size} is not prime (the next prime is {})",
                next_prime(size)
            ),
            Self::NoBackends => f.write_str("cannot build a Maglev table without backends"),
            Self::TooSmall { size, backends } => write!(
                f,
                "Maglev table size {size} is smaller than the number of backends \
                 ({backends}); use at least {} slots",
                table_size_for(backends)
            ),
            Self::DuplicateKey { first, second } => write!(
                f,
                "backends #{first} and #{second} have the same key; \
                 each backend needs a unique key"
            ),
            Self::ZeroTotalWeight => {
                f.write_str("every backend has weight 0, so there is no server to send traffic to")
            }
        }
    }
}

impl std::error::Error for MaglevError {}

/// The table size Ricochet uses for `n` backends: [`DEFAULT_TABLE_SIZE`], or the smallest
/// prime `>= 100 * n` when that is larger (saturating at [`LARGEST_PRIME`]).
#[must_use]
pub fn table_size_for(n: usize) -> u32 {
    let wanted = u64::try_from(n)
        .unwrap_or(u64::MAX)
        .saturating_mul(u64::from(SLOTS_PER_BACKEND));
    if wanted <= u64::from(DEFAULT_TABLE_SIZE) {
        DEFAULT_TABLE_SIZE
    } else {
        u32::try_from(wanted)
            .ok()
            .filter(|&wanted| wanted <= LARGEST_PRIME)
            .map_or(LARGEST_PRIME, next_prime)
    }
}

/// Builds the Maglev table of `size` slots for `backends`.
///
/// Entry `i` of the result is the index in `backends` of the server that owns slot `i`;
/// the result has exactly `size` entries and every one is a valid index of a backend
/// with a non-zero weight. See the crate documentation for the algorithm.
///
/// ```
/// use ricochet_maglev::{build, table_size_for, Backend};
///
/// // IPv4 address and port of each server, in network byte order.
/// let (a, b) = ([192, 168, 33, 10, 0, 80], [192, 168, 34, 10, 0, 80]);
/// let backends = [Backend::new(&a, 1), Backend::new(&b, 3)];
/// let size = table_size_for(backends.len());
/// let table = build(&backends, size)?;
///
/// // What the data plane does for a flow whose hash is 0xdead_beef.
/// let server = &backends[table[(0xdead_beef_u32 % size) as usize] as usize];
/// assert!(server.weight > 0);
/// # Ok::<(), ricochet_maglev::MaglevError>(())
/// ```
///
/// # Errors
///
/// Checked in this order: [`MaglevError::NotPrime`] if `size` is not prime,
/// [`MaglevError::NoBackends`] if `backends` is empty, [`MaglevError::TooSmall`] if
/// `size < backends.len()`, [`MaglevError::DuplicateKey`] if two backends share a key,
/// and [`MaglevError::ZeroTotalWeight`] if every weight is 0.
pub fn build(backends: &[Backend<'_>], size: u32) -> Result<Vec<u32>, MaglevError> {
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    if backends.is_empty() {
        return Err(MaglevError::NoBackends);
    }
    let too_small = MaglevError::TooSmall {
        size,
        backends: backends.len(),
    };
    if backends.len() > size as usize {
        return Err(too_small);
    }
    // Every index fits in a u32 since there are at most `size` backends.
    let count = u32::try_from(backends.len()).map_err(|_| too_small)?;

    // Turn order breaks ties by key, never by list position.
    let mut by_key: Vec<u32> = (0..count).collect();
    by_key.sort_unstable_by_key(|&i| backends[i as usize].key);
    if let Some(pair) = by_key
        .windows(2)
        .find(|pair| backends[pair[0] as usize].key == backends[pair[1] as usize].key)
    {
        let (a, b) = (pair[0] as usize, pair[1] as usize);
        return Err(MaglevError::DuplicateKey {
            first: a.min(b),
            second: a.max(b),
        });
    }

    let mut players = Vec::new();
    let mut turns = BinaryHeap::new();
    for &index in &by_key {
        let backend = &backends[index as usize];
        if backend.weight == 0 {
            continue;
        }
        turns.push(Reverse(Turn {
            turn: 1,
            weight: backend.weight,
            player: players.len(),
        }));
        players.push(Player {
            index,
            permutation: Permutation::new(backend.key, size),
        });
    }
    if players.is_empty() {
        return Err(MaglevError::ZeroTotalWeight);
    }

    let mut table = vec![0; size as usize];
    let mut claimed = SlotSet::new(size);
    for _ in 0..size {
        let mut next = turns
            .peek_mut()
            .expect("the heap keeps one turn per weighted backend, and there is one");
        let Reverse(turn) = &mut *next;
        let player = &mut players[turn.player];
        let slot = player.permutation.claim_next_free(&mut claimed);
        table[slot] = player.index;
        turn.turn += 1;
        // Dropping `next` moves the updated turn to its place in the heap.
    }
    Ok(table)
}

/// A backend with a non-zero weight, during a build.
struct Player {
    /// Position in the caller's list.
    index: u32,
    permutation: Permutation,
}

/// A backend's walk through the slots: `offset, offset + skip, offset + 2 skip, ...`
/// modulo the table size.
struct Permutation {
    next: u32,
    skip: u32,
    /// `size - skip`: a step from `next >= wrap` passes the end of the table.
    wrap: u32,
}

impl Permutation {
    fn new(key: &[u8], size: u32) -> Self {
        let size64 = u64::from(size);
        let offset = key_hash(key, OFFSET_SEED) % size64;
        // With size 2, `size - 1` is 1 and skip is always 1, which still covers both slots.
        let skip = key_hash(key, SKIP_SEED) % (size64 - 1) + 1;
        let skip = u32::try_from(skip).expect("skip < size");
        Self {
            next: u32::try_from(offset).expect("offset < size"),
            skip,
            wrap: size - skip,
        }
    }

    /// Advances to the next free slot of the walk, claims it and returns it. One must be
    /// left: since the size is prime and `0 < skip < size`, the walk visits every slot.
    fn claim_next_free(&mut self, claimed: &mut SlotSet) -> usize {
        loop {
            let slot = self.next as usize;
            self.next = if self.next >= self.wrap {
                self.next - self.wrap
            } else {
                self.next + self.skip
            };
            if claimed.claim(slot) {
                return slot;
            }
        }
    }
}

/// Which slots are taken, one bit each: the probes of a build jump around the table, and
/// a bitmap 32 times smaller than the table stays in cache far better (655,373 slots make
/// an 80 KiB bitmap against a 2.5 MiB table).
struct SlotSet {
    words: Vec<u64>,
}

impl SlotSet {
    fn new(size: u32) -> Self {
        Self {
            words: vec![0; (size as usize).div_ceil(64)],
        }
    }

    /// Marks `slot` taken; returns whether it was free.
    fn claim(&mut self, slot: usize) -> bool {
        let (word, bit) = (&mut self.words[slot / 64], 1 << (slot % 64));
        let free = *word & bit == 0;
        *word |= bit;
        free
    }
}

/// A backend's next turn: its `turn`-th, at virtual time `(turn - 1/2) / weight`.
#[derive(Debug, Clone, Copy)]
struct Turn {
    turn: u32,
    weight: u32,
    /// Position in the key order, which breaks ties.
    player: usize,
}

impl Turn {
    /// Compares the times `(2a - 1) / 2wa` and `(2b - 1) / 2wb` exactly, by
    /// cross-multiplying: `(2a - 1) wb` and `(2b - 1) wa` are below 2^65.
    fn time_cmp(&self, other: &Self) -> Ordering {
        let numerator = |turn: u32| 2 * u128::from(turn) - 1;
        (numerator(self.turn) * u128::from(other.weight))
            .cmp(&(numerator(other.turn) * u128::from(self.weight)))
    }
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        self.time_cmp(other)
            .then_with(|| self.player.cmp(&other.player))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

/// The number of slots each of `backends` backends owns in `table`.
///
/// # Panics
///
/// If an entry of `table` is not below `backends`.
#[must_use]
pub fn slot_counts(table: &[u32], backends: usize) -> Vec<usize> {
    let mut counts = vec![0; backends];
    for &entry in table {
        counts[entry as usize] += 1;
    }
    counts
}

/// The number of slots whose entry differs between two tables built for the same list of
/// backends (for example before and after a weight change).
///
/// When the lists differ, indices do not identify servers: use [`slots_moved_by_key`].
///
/// # Panics
///
/// If the tables have different sizes.
#[must_use]
pub fn slots_moved(a: &[u32], b: &[u32]) -> usize {
    assert_eq!(a.len(), b.len(), "tables of different sizes");
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// The number of slots whose owner, identified by its key, differs between table `a`
/// built for `a_backends` and table `b` built for `b_backends`.
///
/// # Panics
///
/// If the tables have different sizes or an entry is not an index of its list.
#[must_use]
pub fn slots_moved_by_key(
    a: &[u32],
    a_backends: &[Backend<'_>],
    b: &[u32],
    b_backends: &[Backend<'_>],
) -> usize {
    assert_eq!(a.len(), b.len(), "tables of different sizes");
    a.iter()
        .zip(b)
        .filter(|&(&x, &y)| a_backends[x as usize].key != b_backends[y as usize].key)
        .count()
}
