//! What happens to a packet: every stage answers with a [`Reason`] when it stops the
//! packet, and [`action`] maps each reason to its XDP action in one exhaustive match,
//! so a new reason cannot be given an action by accident at some call site.

use ricochet_common::Reason;

/// The XDP action class of a reason. The entry point turns it into the action code:
/// `Forward` becomes `XDP_TX` or a redirect, by the egress interface of the route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `XDP_PASS`: the kernel stack gets the packet untouched.
    Pass,
    /// `XDP_DROP`.
    Drop,
    /// `XDP_TX`: the rewritten packet goes back out of the interface it came in on
    /// (an ICMP error to the client).
    Bounce,
    /// Encapsulated towards a server: `XDP_TX` when the route's egress is the ingress
    /// interface, otherwise `bpf_redirect` to the egress.
    Forward,
}

/// The action of every reason.
pub const fn action(reason: Reason) -> Action {
    match reason {
        Reason::Forwarded | Reason::ForwardedIcmp => Action::Forward,
        Reason::IcmpTooBig => Action::Bounce,
        Reason::PassNotIp | Reason::PassNotVip | Reason::PassTruncatedL2 => Action::Pass,
        Reason::DropMalformedIpv4
        | Reason::DropMalformedIpv6
        | Reason::DropIpv4Options
        | Reason::DropFragment
        | Reason::DropIpv6ExtHeader
        | Reason::DropIcmp
        | Reason::DropIcmpBadQuote
        | Reason::DropL2NotOnLink
        | Reason::DropUnsupportedProto
        | Reason::DropTruncatedL4
        | Reason::DropNoService
        | Reason::DropNoServer
        | Reason::DropNoSource
        | Reason::DropTooBig
        | Reason::DropNoRoute
        | Reason::DropNoNeighbour
        | Reason::DropAdjustFailed
        | Reason::DropTooBigRateLimited
        | Reason::DropTooBigMulticastSource
        | Reason::DropTooBigBroadcastSource
        | Reason::DropTooBigUnspecifiedSource => Action::Drop,
    }
}

/// A forwarded packet: encapsulated, to leave by interface `ifindex`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub ifindex: u32,
    /// [`Reason::Forwarded`], or [`Reason::ForwardedIcmp`] for an ICMP error about a flow.
    pub reason: Reason,
}

/// Where the balancing stage leaves a packet it has not stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Encapsulated; to leave by `ifindex`.
    Forward { ifindex: u32 },
    /// The encapsulated packet exceeds the route's MTU, which leaves `mtu` to the inner
    /// packet: to be answered with an ICMP "too big" error (after the balancing
    /// subprogram's stack frame is released). A `u32` like `ifindex`, so that both
    /// variants define the same bits of the one register the result travels in (with a
    /// `u16`, LLVM leaves the rest undefined, and may fill it from a register holding a
    /// pointer, which the verifier refuses to shift).
    TooBig { mtu: u32 },
}

// Stage results cross BPF subprogram calls, which return one register: keep them in 8
// bytes (a larger aggregate return does not compile for BPF).
const _: () = assert!(core::mem::size_of::<Result<Next, Reason>>() <= 8);
const _: () = assert!(core::mem::size_of::<Result<Forward, Reason>>() <= 8);
const _: () = assert!(core::mem::size_of::<Result<(), Reason>>() <= 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_and_drop_follow_the_reason_names() {
        for r in Reason::ALL {
            let name = r.name();
            let a = action(r);
            if name.starts_with("pass_") {
                assert_eq!(a, Action::Pass, "{name}");
            } else if name.starts_with("drop_") {
                assert_eq!(a, Action::Drop, "{name}");
            } else {
                assert!(matches!(a, Action::Forward | Action::Bounce), "{name}");
            }
        }
        assert_eq!(action(Reason::Forwarded), Action::Forward);
        assert_eq!(action(Reason::IcmpTooBig), Action::Bounce);
    }
}
