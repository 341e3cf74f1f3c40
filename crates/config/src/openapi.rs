//! What the OpenAPI document says about the model's fields, from the rules validation
//! enforces.
//!
//! The ranges below are what validation checks a single field against; the model's
//! `#[schema(minimum = .., maximum = ..)]` attributes state the same numbers in the
//! document (utoipa's attributes take literals only, so they are written out there; names
//! share one schema, [`ObjectName`], built from the name rule), and
//! `tests/schema_ranges.rs` fails if a stated bound and this module, or a stated bound and
//! what validation accepts at it and just past it, disagree. Rules between fields or
//! objects (a `receive_timeout` below its `send_interval`, references, overlapping ports)
//! are not in the document: JSON Schema states each field on its own.
//!
//! With the `openapi` feature, also the schemas utoipa cannot derive or that are stated
//! once for many fields: [`IpAddress`], [`U64`] and [`ObjectName`].

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

/// An engine's name (`GroupEngine.name`), in bytes ([`crate::ENGINE_NAME_RULE`]): a host
/// name's longest.
pub const ENGINE_NAME_LENGTH: RangeInclusive<usize> = 1..=crate::MAX_ENGINE_NAME_LEN;

/// The characters of an engine's name, as a regular expression (its length is
/// [`ENGINE_NAME_LENGTH`]).
pub const ENGINE_NAME_PATTERN: &str = "^[A-Za-z0-9._-]+$";

/// `GroupEngine.addresses`: one or two, at most one per family (a rule between items).
pub const ENGINE_ADDRESSES: RangeInclusive<usize> = 1..=2;

/// `GroupBgp.local_as` and `BgpPeer.remote_as`: 4-byte AS numbers (RFC 6793); 0 is
/// reserved (RFC 7607).
pub const AS_NUMBER: RangeInclusive<u32> = 1..=u32::MAX;

/// `GroupBgp.peers`: at least this many.
pub const MIN_BGP_PEERS: usize = 1;

/// `GroupBgp.hold_time`, seconds: RFC 4271 allows 0 (no keepalives) or 3 and more; 0 is
/// refused, so that a dead engine's routes always expire.
pub const HOLD_TIME: RangeInclusive<u16> = 3..=u16::MAX;

/// `GroupBgp.bfd_interval_ms`, milliseconds: BIRD's useful range (below 10 ms a busy
/// engine misses its own packets; above 10 s BFD is slower than the hold time).
pub const BFD_INTERVAL_MS: RangeInclusive<u32> = 10..=10_000;

#[cfg(feature = "openapi")]
pub use schemas::{IpAddress, ObjectName, U64};

#[cfg(feature = "openapi")]
mod schemas {
    use std::borrow::Cow;

    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
    use utoipa::openapi::{RefOr, Schema};

    /// The schema of an [`std::net::IpAddr`] field (`#[schema(value_type = IpAddress)]`):
    /// a string in the `ipv4` or the `ipv6` format, which is what it parses (a dotted quad
    /// without leading zeros, or an IPv6 address without a zone). JSON Schema has no format
    /// for either family.
    pub struct IpAddress;

    impl utoipa::PartialSchema for IpAddress {
        fn schema() -> RefOr<Schema> {
            let family = |format| {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(format)))
            };
            OneOfBuilder::new()
                .item(family(KnownFormat::Ipv4))
                .item(family(KnownFormat::Ipv6))
                .description(Some("An IPv4 or IPv6 address"))
                .examples(["192.168.33.10", "2001:db8::10"])
                .into()
        }
    }

    impl utoipa::ToSchema for IpAddress {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("IpAddress")
        }
    }

    /// The schema of an object's name and of every reference to one
    /// (`#[schema(value_type = ObjectName, inline)]`): [`crate::NAME_RULE`] as its length
    /// and [`crate::NAME_PATTERN`], so that no field writes the rule again.
    pub struct ObjectName;

    impl utoipa::PartialSchema for ObjectName {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(*super::NAME_LENGTH.start()))
                .max_length(Some(*super::NAME_LENGTH.end()))
                .pattern(Some(crate::NAME_PATTERN))
                .into()
        }
    }

    impl utoipa::ToSchema for ObjectName {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("ObjectName")
        }
    }

    /// The schema of a u64 a client sends (`#[schema(value_type = U64)]`, inline): from 0 to
    /// 2^64 - 1. utoipa writes `int64` for a u64, whose range ends at 2^63 - 1, so that a
    /// client, or a test generating requests, takes valid revisions and counters for
    /// invalid ones (its `uint64` format, behind a feature, is written `u-int64`).
    pub struct U64;

    impl utoipa::PartialSchema for U64 {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::Custom("uint64".to_owned())))
                .minimum(Some(0))
                .maximum(Some(u64::MAX))
                .into()
        }
    }

    impl utoipa::ToSchema for U64 {
        fn name() -> Cow<'static, str> {
            Cow::Borrowed("U64")
        }
    }
}
