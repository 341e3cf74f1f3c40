//! Shared code of the privileged fixture tests.
pub mod lab;
pub mod net;
pub mod packets;
