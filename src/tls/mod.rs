//! TLS with rustls (ring), split by job:
//!
//! - [`certs`]: reading and checking certificates, keys and CA files — the one place they
//!   are read and parsed; imports nothing from the config, which calls it to validate;
//! - [`server`]: termination on a listener, from certificates already loaded: SNI, the
//!   handshake, and installing a new certificate list without a restart;
//! - [`client`]: the rustls client of a pool with a `tls` section, from a CA file already
//!   loaded, and the verifier of `insecure_skip_verify`;
//! - [`protocol`]: what they share (the ring provider, TLS 1.3 and 1.2, the ALPN ids).
//!
//! Loaded once, used as checked: config validation loads every listener's certificates and
//! every pool's CA file through [`certs`]; the terminator and the upstream client are built
//! from exactly those. The certificate-file watch (`control::files`) reloads through
//! [`certs`] too. This layer imports only `metrics` (handshake counters) and `util`.

pub mod certs;
pub mod client;
pub mod protocol;
pub mod server;
