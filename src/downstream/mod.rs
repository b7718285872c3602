//! Downstream: client connections, from the accept to the requests handed to the proxy.
//!
//! - [`listener`]: the accept loop of each listener (the connection cap, the PROXY header,
//!   the TLS handshake through `tls::server`), and HTTP/1.1 and HTTP/2 served with hyper;
//! - [`proxy_protocol`]: the PROXY v1/v2 header an L4 balancer sends first;
//! - [`conn_timeout`]: the header-read and idle timeouts of client connections;
//! - [`h1guard`]: the request-smuggling checks hyper does not make, and JSON in place of
//!   the empty answers hyper's parser writes.
//!
//! May import: `proxy` (each request goes to `Proxy::handle`; the framing guard answers with
//! `proxy::answer`), `config` (the `limits` section), `tls`, `metrics` and `util`.

pub mod conn_timeout;
pub mod h1guard;
pub mod listener;
pub mod proxy_protocol;
