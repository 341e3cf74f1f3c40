//! The per-packet pseudo-random numbers (the flow-table sample, the outer IPv4 ID of a
//! packet without DF): SplitMix64 over a per-CPU state, computed in the program.
//!
//! `bpf_get_prandom_u32` is a helper call. Drawn per packet, it cost the established
//! path about 40 ns on an AMD EPYC whose kernel returns through the SRSO "Safe RET"
//! thunk (docs/benchmarks/2026-12-04-amd), as much as the rest of the Maglev pick; the
//! generator here is a few multiplies, shifts and xors on a per-CPU word the verifier
//! reaches without a call. Neither use needs more than numbers that differ from their
//! neighbours' and have no period a flow could lock onto (SplitMix64 passes BigCrush);
//! neither needs unpredictable ones.

/// Where the state of this CPU's generator lives (`RANDOM` in the load balancer: a
/// per-CPU array of one `u64`, zero when created).
pub trait RandomState {
    /// This CPU's state. The pointer is valid for the rest of the program run, and no
    /// one else writes it meanwhile (per CPU).
    fn random_state(&self) -> Option<*mut u64>;
    /// `bpf_get_prandom_u32()`: seeds a fresh state, and answers when there is none.
    fn kernel_random(&self) -> u32;
}

/// SplitMix64's increment (the golden ratio in 64 bits).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The next number of the generator whose state is `state` (advancing it): the high
/// half of SplitMix64's output.
#[inline(always)]
pub fn next(state: &mut u64) -> u32 {
    *state = state.wrapping_add(GAMMA);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 32) as u32
}

/// The next number of this CPU's generator. A state of zero (the map's initial value)
/// is seeded from the kernel first, so that CPUs and program loads do not share one
/// sequence.
#[inline(always)]
pub fn prandom_u32(env: &impl RandomState) -> u32 {
    let Some(s) = env.random_state() else {
        return env.kernel_random();
    };
    // SAFETY: per-CPU slot, no concurrent writer on this CPU (see `random_state`).
    let s = unsafe { &mut *s };
    if *s == 0 {
        *s = (env.kernel_random() as u64) << 32 | env.kernel_random() as u64;
    }
    next(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::{vec, vec::Vec};

    #[test]
    fn the_sequence_is_splitmix64s() {
        // SplitMix64 from state 0: the reference's first outputs are 0xe220a8397b1dcdaf,
        // 0x6e789e6aa1b965f4, 0x06c45d188009454f; the generator answers their high halves.
        let mut s = 0;
        assert_eq!(
            [next(&mut s), next(&mut s), next(&mut s)],
            [0xe220_a839, 0x6e78_9e6a, 0x06c4_5d18]
        );
        assert_eq!(s, GAMMA.wrapping_mul(3));
    }

    struct Env {
        state: Option<RefCell<u64>>,
        kernel: Cell<u32>,
        kernel_calls: Cell<u32>,
    }

    impl RandomState for Env {
        fn random_state(&self) -> Option<*mut u64> {
            self.state.as_ref().map(|s| s.as_ptr())
        }
        fn kernel_random(&self) -> u32 {
            self.kernel_calls.set(self.kernel_calls.get() + 1);
            self.kernel.get()
        }
    }

    fn env(state: Option<u64>) -> Env {
        Env {
            state: state.map(RefCell::new),
            kernel: Cell::new(0x1234_5678),
            kernel_calls: Cell::new(0),
        }
    }

    #[test]
    fn a_fresh_state_is_seeded_from_the_kernel_once() {
        let e = env(Some(0));
        let first = prandom_u32(&e);
        assert_eq!(e.kernel_calls.get(), 2);
        let mut s = 0x1234_5678_1234_5678;
        assert_eq!(first, next(&mut s));
        assert_eq!(prandom_u32(&e), next(&mut s));
        assert_eq!(e.kernel_calls.get(), 2, "seeded once");
    }

    #[test]
    fn without_a_state_the_kernel_answers() {
        let e = env(None);
        assert_eq!(prandom_u32(&e), 0x1234_5678);
        assert_eq!(e.kernel_calls.get(), 1);
    }

    #[test]
    fn one_in_sixteen_is_sampled_and_ids_spread() {
        // What the balancer asks of the numbers: the top bits sample one packet in
        // `FLOW_SAMPLE` without a period, and the low 16 bits (the IPv4 ID) differ from
        // their neighbours'.
        let mut s = 42;
        let n: Vec<u32> = (0..1 << 16).map(|_| next(&mut s)).collect();
        let sampled = n.iter().filter(|&&x| x < u32::MAX / 16).count();
        assert!((3800..4400).contains(&sampled), "{sampled} of 65536");
        // No phase: every residue of the packet index modulo 16 is sampled.
        let mut phases = vec![0u32; 16];
        for (i, _) in n.iter().enumerate().filter(|(_, &x)| x < u32::MAX / 16) {
            phases[i % 16] += 1;
        }
        assert!(phases.iter().all(|&p| p > 150), "{phases:?}");
        let repeats = n.windows(2).filter(|w| w[0] as u16 == w[1] as u16).count();
        assert!(repeats < 8, "{repeats} neighbours share an ID");
    }
}
