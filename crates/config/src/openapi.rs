//! What the OpenAPI document says about the model's fields, from the rules validation
//! enforces.
//!
//! The ranges below are what validation checks a single field against; the model's
//! `#[schema(minimum = .., maximum = ..)]` attributes state the same numbers in the
//! document (utoipa's attributes take literals only, so they are written out there), and
//! `tests/schema_ranges.rs` fails if a stated bound and this module, or a stated bound and
//! what validation accepts at it and just past it, disagree. Rules between fields or
//! objects (a `receive_timeout` below its `send_interval`, references, overlapping ports)
//! are not in the document: JSON Schema states each field on its own.

use std::ops::RangeInclusive;

use crate::model::{MAX_NAME_LEN, MAX_RATIO, MIN_RATIO};
use crate::table::{MAX_SERVERS_PER_POOL, MAX_TABLE_SIZE};

/// Object names, in bytes ([`crate::NAME_RULE`], [`crate::NAME_PATTERN`]).
pub const NAME_LENGTH: RangeInclusive<usize> = 1..=MAX_NAME_LEN;

/// Every port field: 0 is refused everywhere (a service port, a server port, a monitor's
/// port, a GUE port).
pub const PORT: RangeInclusive<u16> = 1..=u16::MAX;

/// `Server.ratio` (Avi's range).
pub const RATIO: RangeInclusive<u32> = MIN_RATIO..=MAX_RATIO;

/// `NetworkProfile.session_idle_timeout` of a `tcp_fast_path` (or `tcp_proxy`) profile,
/// seconds (Avi's range).
pub const TCP_IDLE_TIMEOUT: RangeInclusive<u32> = 5..=14_400;

/// `NetworkProfile.session_idle_timeout` of a `udp_fast_path` (or `udp_proxy`) profile,
/// seconds (Avi's range).
pub const UDP_IDLE_TIMEOUT: RangeInclusive<u32> = 2..=3_600;

/// `NetworkProfile.session_idle_timeout` whatever the type, as the document states it: the
/// range of each type is a rule between two fields.
pub const IDLE_TIMEOUT: RangeInclusive<u32> = *UDP_IDLE_TIMEOUT.start()..=*TCP_IDLE_TIMEOUT.end();

/// `HealthMonitor.send_interval`, seconds. Avi says 1 to 3600, but `receive_timeout` is at
/// least 1 and less than `send_interval`, so an interval of 1 is never valid: the range
/// says so instead of a refusal about another field.
pub const SEND_INTERVAL: RangeInclusive<u32> = 2..=3_600;

/// `HealthMonitor.receive_timeout`, seconds (and less than `send_interval`).
pub const RECEIVE_TIMEOUT: RangeInclusive<u32> = 1..=2_400;

/// `HealthMonitor.successful_checks` and `failed_checks` ("rise" and "fall").
pub const CHECKS: RangeInclusive<u32> = 1..=50;

/// `Pool.table_size`: 0 and 1 are not prime, 2 is the smallest size an empty pool may
/// have; the largest is [`MAX_TABLE_SIZE`]. Primality and the 100 slots per server are
/// not in the document.
pub const TABLE_SIZE: RangeInclusive<u32> = 2..=MAX_TABLE_SIZE;

/// `Pool.servers`: at most this many.
pub const MAX_SERVERS: usize = MAX_SERVERS_PER_POOL;
