//! An arbitrary (field, value) pair of a pool's Redis hash, at an arbitrary time → the
//! registry's entry judge (`registry::judge`), which decides node / expired / invalid.
//!
//! Checks, besides "never panics":
//! - a node keeps the field as its address, has a weight in 1..=1000 and an expiry (if
//!   any) after `now`; an expired entry's time is at or before `now`;
//! - the address rule is the config's (`check_node_addr`): a field is invalid whenever the
//!   config would refuse it as a static node, and accepted whenever the config accepts it
//!   and the value is valid;
//! - every accepted address is a valid HTTP authority (the snapshot builds one from it);
//! - the value's parse round-trips through `EntryValue::to_json` (what `node register`
//!   writes).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::config::values::check_node_addr;
use switchyard::config::validate::MAX_WEIGHT;
use switchyard::control::registry::{judge, parse_value, validate_addr, Verdict};

#[derive(Arbitrary, Debug)]
struct Entry {
    field: String,
    value: String,
    now_ms: u64,
}

fuzz_target!(|e: Entry| {
    let verdict = judge(&e.field, &e.value, e.now_ms);
    let addr_ok = check_node_addr(&e.field).is_ok();
    assert_eq!(addr_ok, validate_addr(&e.field).is_ok());
    let value = parse_value(&e.value);
    match &verdict {
        Verdict::Node(node, expiry) => {
            assert!(addr_ok, "{e:?} accepted an address the config refuses");
            assert_eq!(node.addr, e.field);
            assert!((1..=MAX_WEIGHT).contains(&node.weight), "{verdict:?}");
            if let Some(t) = expiry {
                assert!(*t > e.now_ms, "{verdict:?} at {}", e.now_ms);
            }
            assert!(
                http::uri::Authority::try_from(e.field.as_str()).is_ok(),
                "{e:?}: a valid node address is no authority"
            );
        }
        Verdict::Expired(t) => {
            assert!(addr_ok);
            assert!(*t <= e.now_ms);
        }
        Verdict::Invalid(reason) => {
            assert!(!addr_ok || value.is_err(), "{e:?} refused: {reason}");
            assert!(!reason.to_string().is_empty());
        }
    }
    if let Ok(v) = value {
        assert_eq!(parse_value(&v.to_json()), Ok(v));
    }
});
