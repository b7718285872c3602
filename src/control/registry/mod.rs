//! Live node registration through Redis: the protocol, the subscriber task and the
//! supervisor's end of it.
//!
//! The registry in Redis is the truth: hash `{key_prefix}:pool:{pool}` (field `host:port`,
//! value `{"weight": 2, "expires_at_ms": ...}`); a message on `channel` naming a pool (or
//! `*`) only says "look again", because pub/sub delivers at most once and loses what is sent
//! while a subscriber is away.
//!
//! ## Who does what
//! - [`protocol`]: keys, values and their verdicts, and how Redis is reached — shared with
//!   `switchyard node`;
//! - [`subscriber`]: one task per configured `redis` section owns the Redis connections
//!   (a pub/sub connection and a command connection), reads the hashes one batch at a time
//!   and sends the supervisor the full node set of every pool whose set changed;
//! - [`handle`]: the supervisor's end ([`RegistryHandle`]): it takes in the updates (all
//!   pending ones before one rebuild), keeps the entries the snapshots are built with, and
//!   starts, restarts and stops the subscriber when a reload changes the `redis` section.
//!
//! ## When the subscriber reads
//! - everything, after every (re)connect (after SUBSCRIBE is confirmed, so nothing written
//!   after the read can be missed), every `resync_interval`, and when a reload changes the
//!   set of configured pools;
//! - the pools named by the messages pending at that moment, all of them drained first
//!   (a thousand messages for one pool → one HGETALL; `*` → every pool); a message naming
//!   a pool that is not in the config is ignored;
//! - the pools with an entry whose `expires_at_ms` has come, at that moment (a timer), so an
//!   entry is dropped on time — and never while its owner is still heartbeating, even by a
//!   bare `HSET` without `PUBLISH`.
//!
//! ## Outage
//! Any Redis error or timeout ends the session: `switchyard_redis_connected` goes to 0, the
//! balancer keeps the last node set it knew — expiry included: nothing is dropped while the
//! registry cannot be read, since a node whose heartbeat cannot reach Redis either is not
//! dead — and the subscriber reconnects with full-jitter exponential backoff (100 ms doubling to a
//! 5 s cap; the attempt count resets once a session has stayed up for 5 s). The full re-read
//! after reconnecting picks up whatever changed meanwhile.
//!
//! ## `switchyard_registry_updates_total{result}`
//! - `applied`: a pool's node set changed (re-read or expiry) and was handed to the supervisor;
//! - `unchanged`: a pool was re-read and its node set was the same;
//! - `invalid`: a bad entry (address, weight, JSON), counted once per distinct
//!   (pool, field, value), like its log line — a resync does not count it again;
//! - `expired`: an entry ignored because its `expires_at_ms` passed, also once per entry;
//! - `unknown_pool`: a message naming a pool that is not in the config;
//! - `error`: a session ended by a Redis error or timeout (a failed connection attempt too).

pub mod handle;
pub mod protocol;
pub mod subscriber;

pub use handle::{RegistryHandle, INITIAL_SYNC_TIMEOUT};
pub use protocol::{
    judge, parse_entry, parse_value, pool_key, redact_url, validate_addr, EntryError, EntryValue,
    ValueError, Verdict,
};
