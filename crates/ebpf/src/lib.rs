//! Ricochet's kernel programs by role. Everything here is `no_std` and compiles for the
//! host too, where it has ordinary unit tests: the load balancer's stages are generic
//! over the packet context ([`packet::XdpPacket`]: the kernel's `XdpContext`, or
//! [`packet::HostPacket`] over a byte buffer) and over the maps and helpers they use
//! (small traits that `src/bin/lb.rs` implements with the kernel's maps).
//!
//! - [`parse`]: Ethernet/VLAN, IPv4/IPv6 and the ports, with the VIP lookup;
//!   [`parse::classify`] is the host's reference of the parse and lookup stages.
//! - [`service`]: VIP and virtual-service lookup.
//! - [`flow`]: the flow table and the Maglev pick.
//! - [`route`]: the next-hop cache and the FIB lookup.
//! - [`encap`]: IP-in-IP encapsulation; [`icmp`]: "too big" answers.
//! - [`random`]: the per-CPU pseudo-random numbers the pipeline draws.
//! - [`verdict`]: the one mapping of a [`ricochet_common::Reason`] to its XDP action.
//! - [`balance`]: the pipeline that ties them together.
//! - [`csum`], [`headers`]: checksums and header layouts, shared with the TC programs.
#![no_std]
// Packet loads and stores of a chosen width at any offset ([`packet::load_u32`] ...).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod balance;
pub mod csum;
pub mod encap;
pub mod flow;
pub mod headers;
pub mod icmp;
pub mod packet;
pub mod parse;
pub mod random;
pub mod route;
pub mod service;
pub mod verdict;

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod testenv;
