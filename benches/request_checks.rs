//! Cost of the per-request checks that run before routing: the rate limiter, the client
//! address, and the HTTP/1 framing guard.
//!
//! Run: `cargo bench --bench request_checks` (add a filter such as `ratelimit` to run one
//! group).
//!
//! - `ratelimit/off`: what a request pays without a `rate_limit` section (the client
//!   address with no `trusted_proxies`, and a `None` check): the baseline;
//! - `ratelimit/one_client`, `ratelimit/4096_clients`: a check that finds its bucket (the
//!   common case: one shard lock, one hash-map lookup, a few float operations);
//! - `ratelimit/new_client_flood`: every check a client never seen before, with the table
//!   full, so inserts and eviction rounds are included (the cost under a flood of
//!   distinct addresses);
//! - `ratelimit_threads/N`: N threads checking their own clients at once (shard locks
//!   under contention): wall time per check, so N cores doing well show about 1/N of
//!   `ratelimit_threads/1`;
//! - `client_addr/trusted_3_hops`: walking `X-Forwarded-For` behind trusted proxies;
//! - `h1guard/plain_read` vs `h1guard/guarded_read`: reading one typical 200-byte GET head
//!   through the connection without and with the framing guard (the difference is what the
//!   guard costs per request on a keep-alive connection);
//! - `h1guard/plain_exchange` vs `h1guard/guarded_exchange`: that read, then writing a
//!   typical response head and body, as hyper does per request; guarded, the request is
//!   handed over through the guard's handle and the write passes the check for hyper's
//!   automatic answers (the difference is the guard's whole cost per request).
//!
//! Budgets: a check under 100 ns single-threaded; `off` a few ns. Against the balancer's
//! ~30-40 µs of CPU per proxied request (bench/RESULTS.md) that keeps "requests/s with rate
//! limiting on vs off" within 1 %, well above the 0.95 the figure asks for.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use switchyard::balance::ratelimit::{RateLimiter, MAX_BUCKETS};
use switchyard::config::{Cidr, RateLimitConfig};
use switchyard::downstream::h1guard::GuardedIo;
use switchyard::proxy::headers::{client_addr, X_FORWARDED_FOR};

/// A limit that never refuses during a benchmark run.
fn generous() -> RateLimiter {
    RateLimiter::new(
        &RateLimitConfig {
            requests_per_second: 1e9,
            burst: u32::MAX,
        },
        None,
    )
}

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))
}

fn bench_checks(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit");
    let peer = ip(7);
    let empty = HeaderMap::new();
    let none: Option<RateLimiter> = None;
    let now = Instant::now();
    group.bench_function("off", |b| {
        b.iter(|| {
            let client = client_addr(black_box(peer), &[], black_box(&empty));
            black_box(none.as_ref().map(|rl| rl.check(client, now)))
        })
    });

    let rl = generous();
    group.bench_function("one_client", |b| {
        b.iter(|| black_box(rl.check(black_box(peer), now)))
    });

    let clients: Vec<IpAddr> = (0..4096).map(ip).collect();
    group.bench_function(BenchmarkId::new("clients", 4096), |b| {
        let mut k = 0usize;
        b.iter(|| {
            k = (k + 1) & 4095;
            black_box(rl.check(black_box(clients[k]), now))
        })
    });

    // A slow rate: no bucket refills, so every eviction round has to go by age.
    let flood = RateLimiter::new(
        &RateLimitConfig {
            requests_per_second: 0.001,
            burst: 1,
        },
        None,
    );
    for i in 0..MAX_BUCKETS as u32 {
        let _ = flood.check(ip(i), now);
    }
    group.bench_function("new_client_flood", |b| {
        let mut i = MAX_BUCKETS as u32;
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(flood.check(black_box(ip(i)), now))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("ratelimit_threads");
    let shared = Arc::new(generous());
    for threads in [1u32, 2, 4] {
        group.bench_function(BenchmarkId::from_parameter(threads), |b| {
            b.iter_custom(|iters| {
                let per = iters / u64::from(threads) + 1;
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        let rl = Arc::clone(&shared);
                        s.spawn(move || {
                            for i in 0..per {
                                let client = ip(t * 1_000_000 + (i & 1023) as u32);
                                black_box(rl.check(client, now)).ok();
                            }
                        });
                    }
                });
                // All threads together did about `iters` checks: wall time per check.
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn bench_client_addr(c: &mut Criterion) {
    let mut group = c.benchmark_group("client_addr");
    let trusted: Vec<Cidr> = ["10.0.0.0/8", "192.168.0.0/16"]
        .iter()
        .filter_map(|s| Cidr::parse(s))
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(
        &X_FORWARDED_FOR,
        HeaderValue::from_static("203.0.113.9, 10.1.2.3, 192.168.7.7"),
    );
    let peer: IpAddr = "10.0.0.1"
        .parse()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    group.bench_function("trusted_3_hops", |b| {
        b.iter(|| black_box(client_addr(black_box(peer), &trusted, black_box(&headers))))
    });
    group.finish();
}

/// A connection that delivers the same request head on every read, like a keep-alive
/// client sending one request after another.
struct Repeat(&'static [u8]);

/// Writes go nowhere, at once.
impl tokio::io::AsyncWrite for Repeat {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncRead for Repeat {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        buf.put_slice(self.0);
        Poll::Ready(Ok(()))
    }
}

const GET_HEAD: &[u8] = b"GET /api/v1/items?page=2 HTTP/1.1\r\nHost: api.example.com\r\n\
    User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: application/json\r\n\
    Accept-Encoding: gzip, br\r\nCookie: session=0123456789abcdef\r\n\r\n";

fn read_once<R: tokio::io::AsyncRead + Unpin>(io: &mut R, cx: &mut Context<'_>, buf: &mut [u8]) {
    let mut rb = tokio::io::ReadBuf::new(buf);
    let _ = black_box(Pin::new(io).poll_read(cx, &mut rb));
    black_box(rb.filled().len());
}

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
    x-request-id: 0123456789abcdef0123456789abcdef\r\ncontent-length: 64\r\n\
    date: Wed, 02 Dec 2026 15:24:35 GMT\r\n\r\n\
    {\"items\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,2]}";

fn write_once<W: tokio::io::AsyncWrite + Unpin>(io: &mut W, cx: &mut Context<'_>) {
    let _ = black_box(Pin::new(io).poll_write(cx, black_box(RESPONSE)));
}

fn bench_h1guard(c: &mut Criterion) {
    let mut group = c.benchmark_group("h1guard");
    let mut cx = Context::from_waker(Waker::noop());
    let mut buf = vec![0u8; 4096];
    let mut plain = Repeat(GET_HEAD);
    group.bench_function("plain_read", |b| {
        b.iter(|| read_once(&mut plain, &mut cx, &mut buf))
    });
    let (mut guarded, _handle) = GuardedIo::new(Repeat(GET_HEAD));
    group.bench_function("guarded_read", |b| {
        b.iter(|| read_once(&mut guarded, &mut cx, &mut buf))
    });
    group.bench_function("plain_exchange", |b| {
        b.iter(|| {
            read_once(&mut plain, &mut cx, &mut buf);
            write_once(&mut plain, &mut cx);
        })
    });
    let (mut guarded, handle) = GuardedIo::new(Repeat(GET_HEAD));
    group.bench_function("guarded_exchange", |b| {
        b.iter(|| {
            read_once(&mut guarded, &mut cx, &mut buf);
            black_box(handle.next_request());
            write_once(&mut guarded, &mut cx);
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    targets = bench_checks, bench_client_addr, bench_h1guard
}
criterion_main!(benches);
