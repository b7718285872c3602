//! The request path: from a request a listener hands over to the response on its way back.

pub mod handler;
pub mod answer;
pub mod headers;
pub mod body;
pub mod accesslog;
pub mod tunnel;
