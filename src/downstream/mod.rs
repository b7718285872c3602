//! Downstream: client connections, from the accept to the requests handed to the proxy.

pub mod conn_timeout;
pub mod h1guard;
pub mod listener;
pub mod proxy_protocol;
