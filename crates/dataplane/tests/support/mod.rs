//! Shared code of the privileged fixture tests: the lab (the program and its world)
//! here; the lab's network and the packet builders come from the test kit, under the
//! names the fixtures use.
#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod lab;
pub use ricochet_testkit::{lab as net, packets};
