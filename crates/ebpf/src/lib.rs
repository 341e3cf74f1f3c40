//! Packet logic of Ricochet's kernel programs that does not touch the kernel: header
//! layouts, checksums and the builders of the headers the programs write. It is
//! `no_std` and compiles for the host too, where it has ordinary unit tests.
#![no_std]

pub mod csum;
pub mod headers;
pub mod packet;

#[cfg(test)]
extern crate std;
