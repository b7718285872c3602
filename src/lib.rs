//! Switchyard: an L7 HTTP load balancer.
//!
//! The library behind the `switchyard` binary (`main.rs` is only the command line). The
//! modules, in the order a request meets them:
//!
//! - [`listener`]: accept connections, serve HTTP/1.1 and HTTP/2 (h2c, or h2 over TLS) with
//!   hyper; [`proxy_protocol`]: the PROXY v1/v2 header an L4 balancer sends first;
//!   [`tls`]: rustls termination (SNI, certificate reload) and HTTPS-upstream settings;
//!   [`conn_timeout`]: the header-read and idle timeouts of client connections;
//!   [`h1guard`]: the request-smuggling checks on HTTP/1 bytes that hyper does not make,
//!   and JSON in place of the empty answers hyper's parser writes;
//! - [`ratelimit`]: the per-client token buckets of `rate_limit`, checked before routing;
//! - [`proxy`]: the request path — [`router`] → [`snapshot`] pool → strategy (the
//!   `strategies` crate) → [`upstream`] (every way of talking to a node: the own HTTP/1.1
//!   codec, hyper's HTTP/1.1 and HTTP/2 client connections, TLS) → response [`body`];
//!   [`tunnel`]: upgraded (WebSocket) connections;
//! - [`headers`]: forwarding and hop-by-hop header rules; [`error`]: the answers the
//!   balancer makes itself, JSON or gRPC-shaped;
//! - [`outlier`] (passive ejection), [`budget`] (retry budget) and [`health`] (active
//!   probes) decide which nodes may take traffic;
//! - [`app`]: the supervisor that owns every task, reloads and shuts down;
//! - [`admin`]: health, readiness, metrics and the JSON API; [`metrics`]: the metric names;
//! - [`config`]: the YAML schema, validation and `file:line:column` errors;
//! - [`registry`]: live node registration through Redis; [`node_cli`]: `switchyard node ...`;
//! - [`accesslog`]: one structured line per request, written off the request path;
//! - [`demo`]: the built-in demo.

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
