//! Arbitrary bytes as a node's answer → the upstream HTTP/1.1 codec (`codec::parse_head`
//! and the body decoder with its trailers, through `codec::parse_response`), for a GET and
//! for a HEAD.
//!
//! Checks, besides "never panics":
//! - an answer that parses has a final status (interim 1xx are skipped; 101 stays);
//! - a `Length(n)` body is exactly n bytes, a HEAD/204/304 body is empty, and a chunked
//!   answer never keeps a `Content-Length`;
//! - a connection is never kept alive after a close-delimited body or a 101;
//! - only a chunked body has trailers;
//! - parsing is incremental: a prefix of the input is incomplete, an error, or the same
//!   answer (the same body, or for a close-delimited body a prefix of it).
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use switchyard::upstream::codec::{parse_response, Framing};

fuzz_target!(|data: &[u8]| {
    let (split, wire) = match data.split_first() {
        Some((b, rest)) => (*b as usize, rest),
        None => return,
    };
    for method in [Method::GET, Method::HEAD] {
        let Ok(Some((head, body, trailers))) = parse_response(wire, &method) else {
            continue;
        };
        if head.framing != Framing::Chunked {
            assert!(trailers.is_empty());
        }
        assert!(
            !head.status.is_informational() || head.status.as_u16() == 101,
            "{}",
            head.status
        );
        match head.framing {
            Framing::Length(n) => assert_eq!(body.len() as u64, n),
            Framing::Empty => assert!(body.is_empty()),
            Framing::Chunked => {
                assert!(head.headers.get(http::header::CONTENT_LENGTH).is_none())
            }
            Framing::Close => assert!(!head.keep_alive),
        }
        if method == Method::HEAD {
            assert_eq!(head.framing, Framing::Empty);
        }
        if head.status.as_u16() == 101 {
            assert!(!head.keep_alive);
        }
        // A prefix of the input: incomplete, or the same answer (a body with a length or
        // chunks ends where it ends; a close-delimited one is cut with the input).
        let cut = split * wire.len() / 256;
        if let Ok(Some((h2, b2, _))) = parse_response(&wire[..cut], &method) {
            assert_eq!(h2.status, head.status);
            assert_eq!(h2.framing == Framing::Close, head.framing == Framing::Close);
            if head.framing == Framing::Close {
                assert!(body.starts_with(&b2));
            } else {
                assert_eq!(
                    b2,
                    body,
                    "a prefix ({cut} of {}) read another body",
                    wire.len()
                );
            }
        }
    }
});
