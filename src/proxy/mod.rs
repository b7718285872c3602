//! The request path: from a request a listener hands over to the response on its way back.
//!
//! In the order a request meets them:
//! - [`handler`]: `Proxy::handle` — the checks before routing (framing-guard verdict,
//!   HTTP/2 header-list size, target form, rate limit, announced body size), the route,
//!   and the answers made here;
//! - `prepare.rs`: the request taken apart for forwarding (forwarding headers, hash key,
//!   deadline) and its body made ready (empty, buffered for retries, or streamed);
//! - `forward.rs`: the attempt loop — pick and claim a node, send through the upstream
//!   layer, record the outcome, retry on another node as the policy and budget allow;
//! - [`headers`]: hop-by-hop and forwarding header rules, the client address, request ids;
//! - [`body`]: the response body on its way out, ending the in-flight accounting, metrics
//!   and access-log line when it ends; [`accesslog`]: the access-log writer;
//! - [`answer`]: `ProxyError`, its one mapping to statuses, and the JSON or gRPC-shaped
//!   answers; [`tunnel`]: upgraded (WebSocket) connections.
//!
//! May import: `balance` (the snapshot it routes with), `upstream`, `config` (value types
//! only: the access log's section and the `Cidr` of `trusted_proxies`), `metrics` and `util` — never the listeners above it or
//! the control plane.

pub mod accesslog;
pub mod answer;
pub mod body;
mod forward;
pub mod handler;
pub mod headers;
mod prepare;
pub mod tunnel;
