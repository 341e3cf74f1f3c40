//! Bounds-checked access to the packet, shared by the XDP and TC programs.

use aya_ebpf::programs::{TcContext, XdpContext};

/// A program context whose packet lies in `[data(), data_end())`.
pub trait PacketCtx {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
}

impl PacketCtx for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
}

impl PacketCtx for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
}

/// Pointer to a `T` at `offset` bytes into the packet, if the packet holds all of it.
///
/// The check is written as the verifier needs to see it (packet start plus constant
/// size against the packet end) and is inlined into every caller. The pointer is valid
/// only until the next helper call that moves the packet's head or tail
/// (`bpf_xdp_adjust_head`/`_tail`, `bpf_skb_adjust_room`, ...): re-derive it afterwards.
#[inline(always)]
pub fn ptr_at<T>(ctx: &impl PacketCtx, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}
