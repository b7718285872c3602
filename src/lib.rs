//! Switchyard: an L7 HTTP load balancer.
//!
//! The library behind the `switchyard` binary (`main.rs` is only the command line). The
//! layers, in the order a request meets them, each a folder whose `mod.rs` says what it
//! owns and may import:
//!
//! - [`downstream`]: accept client connections and serve HTTP/1.1 and HTTP/2 with hyper —
//!   the connection cap, the PROXY header, the TLS handshake, the header-read and idle
//!   timeouts, the HTTP/1 framing guard;
//! - [`proxy`]: the request path — checks before routing, the route, the request prepared
//!   for forwarding, the attempt loop with retries, header rules, the response body that
//!   ends the accounting, the answers the balancer makes itself, the access log, tunnels;
//! - [`balance`]: the routing snapshot behind one `ArcSwap` — router, pools, nodes and
//!   their live state, rate limiter, outlier ejection, retry budget — and how it is built;
//!   the strategies themselves are the `strategies` crate;
//! - [`upstream`]: every way of talking to a node, behind one `send`: the own HTTP/1.1
//!   codec, hyper's HTTP/1.1 and HTTP/2 client connections, TCP and TLS;
//! - [`config`]: the YAML schema, validation with `file:line:column` errors, and the TLS
//!   files it names loaded once;
//! - [`tls`]: certificates and keys (loading and checks), termination with SNI, the
//!   upstream client configuration;
//! - [`metrics`]: every metric's name, labels and label values, and cheap handles;
//! - [`util`]: the binary's clock, random numbers, lock helper, byte-stream wrapper, error
//!   chains and time formatting.
//!
//! Beside the request path: [`control`] — the supervisor that owns every task, reloads and
//! shuts down, the file watch, the Redis registry, health probes and the admin API — and
//! [`cli`], the `node` and `demo` subcommands.
//!
//! Imports go downward only; a layer may import itself and any layer after it here:
//!
//! ```text
//! cli, main → control → downstream → proxy → balance → upstream → config → tls → metrics → util
//! ```
//!
//! with narrower rules for four of them: `upstream` imports only `tls` and `util` (it speaks
//! its own settings, never the config's); `config` imports only `tls::certs` and `util`;
//! `metrics` and `util` import nothing above them. No two files import each other through
//! any chain. `tests/layering.rs` checks all of it from the sources.

pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod downstream;
pub mod metrics;
pub mod proxy;
pub mod tls;
pub mod upstream;
pub mod util;
