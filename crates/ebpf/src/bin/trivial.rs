//! Trivial XDP programs: `xdp_pass` lets everything through, `xdp_tx` bounces every
//! frame back out. The test bed attaches `xdp_pass` to the veth peers of the service
//! engines (a veth delivers XDP_TX frames promptly only to a peer with an XDP program),
//! and benchmarks measure `xdp_tx` as the floor of what any XDP program costs.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {
    // Only the BPF build of this binary is meaningful.
}

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

    #[xdp]
    pub fn xdp_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    #[xdp]
    pub fn xdp_tx(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_TX
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // SAFETY: unreachable in a verified program.
        unsafe { core::hint::unreachable_unchecked() }
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}
