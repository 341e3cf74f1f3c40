//! Bounds-checked access to the packet, shared by the XDP and TC programs, and the
//! packet contexts the load balancer's stages are generic over: the kernel's
//! `XdpContext` and [`HostPacket`], a byte buffer that lets the same code run on the host.

use core::marker::PhantomData;

use aya_ebpf::programs::{TcContext, XdpContext};

/// A program context whose packet lies in `[data(), data_end())`.
pub trait PacketCtx {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
}

/// What the load balancer needs of an XDP context beyond the packet bounds: moving the
/// packet's head and tail (`bpf_xdp_adjust_head`/`_tail`) and the ingress interface.
///
/// After a successful adjustment every pointer into the packet is stale: re-derive it
/// with [`ptr_at`].
pub trait XdpPacket: PacketCtx {
    /// Moves the start of the packet by `delta` bytes (negative grows the head).
    fn adjust_head(&self, delta: i32) -> Result<(), AdjustError>;
    /// Moves the end of the packet by `delta` bytes (negative shrinks it).
    fn adjust_tail(&self, delta: i32) -> Result<(), AdjustError>;
    /// Index of the interface the packet came in on.
    fn ingress_ifindex(&self) -> u32;
}

/// `bpf_xdp_adjust_head`/`_tail` refused the adjustment (no room, or the packet would
/// become shorter than an Ethernet header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdjustError;

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

impl XdpPacket for XdpContext {
    #[inline(always)]
    fn adjust_head(&self, delta: i32) -> Result<(), AdjustError> {
        // SAFETY: plain helper call on this program's context; callers re-derive their
        // packet pointers afterwards.
        match unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(self.ctx, delta) } {
            0 => Ok(()),
            _ => Err(AdjustError),
        }
    }
    #[inline(always)]
    fn adjust_tail(&self, delta: i32) -> Result<(), AdjustError> {
        // SAFETY: as above.
        match unsafe { aya_ebpf::helpers::bpf_xdp_adjust_tail(self.ctx, delta) } {
            0 => Ok(()),
            _ => Err(AdjustError),
        }
    }
    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        XdpContext::ingress_ifindex(self) as u32
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

/// Loads and stores of packet memory at offsets of unknown alignment, a word at a time.
///
/// The packet's headers sit at offsets of no known alignment (the IP header at 14 or 18
/// bytes into a frame whose start the driver chose), so the header types are byte
/// arrays, and LLVM moves them a byte at a time: an IPv6 address is sixteen loads and
/// sixteen stores. The kernel allows misaligned packet access on every architecture
/// with efficient unaligned access (x86-64 and arm64 among them; elsewhere the verifier
/// refuses the program at load, saying so), so in BPF these are single instructions,
/// written in assembly because LLVM may not emit them for a byte-aligned type (its
/// `allows-misaligned-mem-access` feature would also make misaligned stack accesses,
/// which the verifier refuses everywhere). On the host they are `read_unaligned` and
/// `write_unaligned`. The values are in memory order: a word's bytes are the wire's
/// (`u32::from_ne_bytes(wire)`).
///
/// # Safety
/// `p` must point to at least the access's size of packet memory (bounds checked
/// against the packet's end, e.g. with [`ptr_at`]): in BPF nothing but packet memory
/// may be misaligned.
#[inline(always)]
pub unsafe fn load_u32(p: *const u8) -> u32 {
    #[cfg(target_arch = "bpf")]
    {
        let v: u64;
        // SAFETY: the caller's; a plain load (zero-extending).
        unsafe {
            core::arch::asm!(
                "{v} = *(u32 *)({p} + 0)",
                p = in(reg) p,
                v = out(reg) v,
                options(readonly, nostack, preserves_flags)
            )
        };
        v as u32
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller's.
    unsafe {
        core::ptr::read_unaligned(p as *const u32)
    }
}

/// [`load_u32`] of 16 bits.
///
/// # Safety
/// As for [`load_u32`].
#[inline(always)]
pub unsafe fn load_u16(p: *const u8) -> u16 {
    #[cfg(target_arch = "bpf")]
    {
        let v: u64;
        // SAFETY: the caller's; a plain load (zero-extending).
        unsafe {
            core::arch::asm!(
                "{v} = *(u16 *)({p} + 0)",
                p = in(reg) p,
                v = out(reg) v,
                options(readonly, nostack, preserves_flags)
            )
        };
        v as u16
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller's.
    unsafe {
        core::ptr::read_unaligned(p as *const u16)
    }
}

/// The store of [`load_u32`]'s 32 bits.
///
/// # Safety
/// As for [`load_u32`].
#[inline(always)]
pub unsafe fn store_u32(p: *mut u8, v: u32) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller's; a plain store.
    unsafe {
        core::arch::asm!(
            "*(u32 *)({p} + 0) = {v}",
            p = in(reg) p,
            v = in(reg) v as u64,
            options(nostack, preserves_flags)
        )
    };
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller's.
    unsafe {
        core::ptr::write_unaligned(p as *mut u32, v)
    }
}

/// The store of [`load_u16`]'s 16 bits.
///
/// # Safety
/// As for [`load_u32`].
#[inline(always)]
pub unsafe fn store_u16(p: *mut u8, v: u16) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller's; a plain store.
    unsafe {
        core::arch::asm!(
            "*(u16 *)({p} + 0) = {v}",
            p = in(reg) p,
            v = in(reg) v as u64,
            options(nostack, preserves_flags)
        )
    };
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: the caller's.
    unsafe {
        core::ptr::write_unaligned(p as *mut u16, v)
    }
}

/// A copy of the `T` at `offset` bytes into the packet, if the packet holds all of it,
/// read as its `N` words ([`load_u32`]) instead of byte by byte. `T` is a wire header
/// (byte fields only) of `4 * N` bytes.
#[inline(always)]
pub fn read_words<T: Copy, const N: usize>(ctx: &impl PacketCtx, offset: usize) -> Option<T> {
    const { assert!(core::mem::size_of::<T>() == 4 * N) };
    let p = ptr_at::<T>(ctx, offset)?.cast::<u8>();
    let mut w = [0u32; N];
    for (i, w) in w.iter_mut().enumerate() {
        // SAFETY: bounds checked: 4 * N bytes.
        *w = unsafe { load_u32(p.add(4 * i)) };
    }
    // SAFETY: same size; T's fields are bytes, so every bit pattern is a T.
    Some(unsafe { core::mem::transmute_copy::<[u32; N], T>(&w) })
}

/// Minimum packet length `bpf_xdp_adjust_head`/`_tail` leave (an Ethernet header).
const MIN_FRAME: usize = crate::headers::ETH_LEN;

/// A packet in a caller's byte buffer, for running the load balancer's stages on the
/// host (unit tests, the differential fuzz test against BPF_PROG_TEST_RUN).
///
/// The buffer models an XDP frame: the packet starts `headroom` bytes in and the rest of
/// the buffer is tailroom. Head and tail adjustments follow the kernel's rules (within
/// the buffer, never shorter than an Ethernet header), and all access goes through the
/// same [`ptr_at`] the kernel code uses.
pub struct HostPacket<'a> {
    base: *mut u8,
    cap: usize,
    head: core::cell::Cell<usize>,
    tail: core::cell::Cell<usize>,
    ingress_ifindex: u32,
    _buf: PhantomData<&'a mut [u8]>,
}

impl<'a> HostPacket<'a> {
    /// The packet `buf[headroom..headroom + len]`, received on `ingress_ifindex`.
    ///
    /// # Panics
    /// If `headroom + len` exceeds the buffer.
    pub fn new(buf: &'a mut [u8], headroom: usize, len: usize, ingress_ifindex: u32) -> Self {
        assert!(
            headroom + len <= buf.len(),
            "packet of {len} bytes after {headroom} bytes of headroom does not fit a {}-byte buffer",
            buf.len()
        );
        HostPacket {
            base: buf.as_mut_ptr(),
            cap: buf.len(),
            head: core::cell::Cell::new(headroom),
            tail: core::cell::Cell::new(headroom + len),
            ingress_ifindex,
            _buf: PhantomData,
        }
    }

    /// The packet's bytes as they are now.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: head <= tail <= cap are kept by every adjustment, and the buffer is
        // borrowed mutably for 'a, so no one else aliases it.
        unsafe {
            core::slice::from_raw_parts(
                self.base.add(self.head.get()),
                self.tail.get() - self.head.get(),
            )
        }
    }
}

impl PacketCtx for HostPacket<'_> {
    fn data(&self) -> usize {
        self.base as usize + self.head.get()
    }
    fn data_end(&self) -> usize {
        self.base as usize + self.tail.get()
    }
}

impl XdpPacket for HostPacket<'_> {
    fn adjust_head(&self, delta: i32) -> Result<(), AdjustError> {
        let head = self.head.get() as isize + delta as isize;
        if head < 0 || (self.tail.get() as isize) - head < MIN_FRAME as isize {
            return Err(AdjustError);
        }
        self.head.set(head as usize);
        Ok(())
    }
    fn adjust_tail(&self, delta: i32) -> Result<(), AdjustError> {
        let tail = self.tail.get() as isize + delta as isize;
        if tail > self.cap as isize || tail - (self.head.get() as isize) < MIN_FRAME as isize {
            return Err(AdjustError);
        }
        self.tail.set(tail as usize);
        Ok(())
    }
    fn ingress_ifindex(&self) -> u32 {
        self.ingress_ifindex
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_at_checks_bounds() {
        let mut buf = [0u8; 64];
        let p = HostPacket::new(&mut buf, 16, 20, 1);
        assert!(ptr_at::<[u8; 20]>(&p, 0).is_some());
        assert!(ptr_at::<[u8; 21]>(&p, 0).is_none());
        assert!(ptr_at::<[u8; 4]>(&p, 16).is_some());
        assert!(ptr_at::<[u8; 4]>(&p, 17).is_none());
    }

    #[test]
    fn adjustments_follow_the_kernel_rules() {
        let mut buf = [0u8; 64];
        buf[16] = 0xaa;
        let p = HostPacket::new(&mut buf, 16, 20, 1);
        assert_eq!(p.adjust_head(-17), Err(AdjustError), "beyond the headroom");
        assert_eq!(p.adjust_head(7), Err(AdjustError), "shorter than Ethernet");
        p.adjust_head(-16).unwrap();
        assert_eq!(p.bytes().len(), 36);
        assert_eq!(p.bytes()[16], 0xaa);
        assert_eq!(p.adjust_tail(29), Err(AdjustError), "beyond the tailroom");
        p.adjust_tail(28).unwrap();
        assert_eq!(p.bytes().len(), 64);
        assert_eq!(
            p.adjust_tail(-51),
            Err(AdjustError),
            "shorter than Ethernet"
        );
        p.adjust_tail(-50).unwrap();
        assert_eq!(p.bytes().len(), 14);
        assert_eq!(p.ingress_ifindex(), 1);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn new_rejects_an_oversized_packet() {
        let mut buf = [0u8; 8];
        let _ = HostPacket::new(&mut buf, 4, 5, 1);
    }
}
