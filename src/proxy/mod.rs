//! The request path: from a request a listener hands over to the response on its way back.

pub mod accesslog;
pub mod answer;
pub mod body;
mod forward;
pub mod handler;
pub mod headers;
mod prepare;
pub mod tunnel;
