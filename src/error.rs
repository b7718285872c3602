//! The answers the balancer makes itself, in one place.
//!
//! Every failure of the request path ends up as a [`ProxyError`], and [`ProxyError::status`]
//! is the one function that maps it to an HTTP status. Bodies are short JSON
//! (`{"error": "..."}`) and never name internal addresses or carry stack traces.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::upstream::{Kind, UpstreamError};

/// A request the balancer answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // downstream (the client's request)
    #[error("no route matches this request")]
    NoRoute,
    #[error("malformed request")]
    BadRequest,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The client's request body stalled past the pool's idle timeout.
    #[error("request timeout")]
    RequestTimeout,
    #[error("too many requests")]
    RateLimited,
    // pool
    #[error("no healthy upstream node")]
    NoHealthyNode,
    // upstream
    #[error("upstream failed")]
    Upstream(#[source] UpstreamError),
    /// Every node tried answered a retryable 5xx, and the retries are used up: the last
    /// status is passed on.
    #[error("the upstream answered {0}")]
    UpstreamStatus(u16),
}

impl ProxyError {
    /// The status for each error: the one mapping of the process.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::NoHealthyNode => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::Upstream(e) => match e.kind() {
                Kind::Timeout | Kind::ConnectTimeout => StatusCode::GATEWAY_TIMEOUT,
                Kind::Connect | Kind::Broken => StatusCode::BAD_GATEWAY,
                Kind::ClientBody => StatusCode::BAD_REQUEST,
            },
            // Every node tried answered a retryable 5xx: pass the last one on.
            ProxyError::UpstreamStatus(s) => {
                StatusCode::from_u16(*s).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// The JSON body: a fixed string per error, so nothing internal can leak into it.
    fn body(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => r#"{"error":"no route"}"#,
            ProxyError::BadRequest => r#"{"error":"malformed request"}"#,
            ProxyError::BodyTooLarge => r#"{"error":"request body too large"}"#,
            ProxyError::HeadersTooLarge => r#"{"error":"request headers too large"}"#,
            ProxyError::RateLimited => r#"{"error":"too many requests"}"#,
            ProxyError::NoHealthyNode => r#"{"error":"no healthy upstream"}"#,
            ProxyError::RequestTimeout => r#"{"error":"request timeout"}"#,
            ProxyError::Upstream(e) => match e.kind() {
                Kind::Timeout | Kind::ConnectTimeout => r#"{"error":"upstream timeout"}"#,
                Kind::ClientBody => r#"{"error":"malformed request"}"#,
                Kind::Connect | Kind::Broken => r#"{"error":"upstream failed"}"#,
            },
            ProxyError::UpstreamStatus(_) => r#"{"error":"upstream failed"}"#,
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        json_response(self.status(), self.body())
    }
}

/// A small JSON answer.
pub fn json_response(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
