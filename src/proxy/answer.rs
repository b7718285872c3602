//! The answers the balancer makes itself, in one place.
//!
//! Every failure of the request path ends up as a [`ProxyError`], and [`ProxyError::status`]
//! is the one function that maps it to an HTTP status. Bodies are short JSON
//! (`{"error": "..."}`) and never name internal addresses or carry stack traces: each error
//! has one fixed message, used for the JSON body and for `grpc-message` alike, so nothing
//! internal can leak into either.
//!
//! **gRPC requests** get gRPC-shaped answers instead ([`ProxyError::into_grpc_response`]): a
//! gRPC client reads the outcome of a call from `grpc-status`, and turns a non-200 HTTP
//! status into a vague `UNKNOWN`/`UNAVAILABLE` with the JSON body thrown away. A request is
//! gRPC when it is HTTP/2 (gRPC is defined over HTTP/2 only) and its `content-type` is
//! `application/grpc`, optionally followed by `+subtype` (`+proto`, `+json`) or
//! `;parameters` — the gRPC spec's definition ([`is_grpc`]).
//! `application/grpc-web*` is a different protocol (browsers over HTTP/1.1, status carried
//! in the body or read through CORS-exposed headers) whose clients derive the code from the
//! HTTP status when no `grpc-status` is present: it keeps the JSON answers. The answer is HTTP
//! 200, `content-type: application/grpc`, `grpc-status`, `grpc-message` and no body; over
//! HTTP/2 hyper sends it as one HEADERS frame with END_STREAM — gRPC's "Trailers-Only"
//! response. The codes ([`ProxyError::grpc_status`]) are fixed for the four cases
//! operators script against (14 UNAVAILABLE, 4 DEADLINE_EXCEEDED, 8 RESOURCE_EXHAUSTED,
//! 12 UNIMPLEMENTED); the rest follow gRPC's own "HTTP to gRPC Status Code Mapping"
//! (400 → 13 INTERNAL) and what gRPC servers answer for oversize input (a message or
//! metadata over the limit → 8 RESOURCE_EXHAUSTED).
//!
//! Metrics and the access log record the HTTP status an answer stands for (`503` for
//! "no healthy node"), gRPC-shaped or not, so that alerts on 5xx fire for gRPC traffic too.

use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};

use crate::proxy::body::ResponseBody;
use crate::upstream::{Kind, UpstreamError};

/// A request the balancer answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // downstream (the client's request)
    #[error("no route matches this request")]
    NoRoute,
    #[error("malformed request")]
    BadRequest,
    /// `CONNECT`: Switchyard is a reverse proxy, not a tunnel to arbitrary hosts.
    #[error("CONNECT is not supported")]
    Connect,
    /// An asterisk-form target (`*`) with a method other than `OPTIONS`, or an
    /// authority-form target (`host:port`) with a method other than `CONNECT`.
    #[error("request target form not allowed for this method")]
    BadTarget,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request headers too large")]
    HeadersTooLarge,
    /// Only from hyper's HTTP/1 parser (a target over 65,534 bytes), answered by the
    /// framing guard ([`crate::downstream::h1guard`]).
    #[error("request target too long")]
    UriTooLong,
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

/// A fixed message and the JSON body carrying it, from one literal.
macro_rules! answer {
    ($m:literal) => {
        ($m, concat!(r#"{"error":""#, $m, r#""}"#))
    };
}

/// gRPC status codes used here (grpc/grpc `doc/statuscodes.md`).
pub mod grpc_code {
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
}

impl ProxyError {
    /// The status for each error: the one mapping of the process.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::BadRequest | ProxyError::Connect | ProxyError::BadTarget => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
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

    /// The `grpc-status` of the gRPC-shaped answer (see the module docs).
    pub fn grpc_status(&self) -> u8 {
        match self {
            ProxyError::NoRoute => grpc_code::UNIMPLEMENTED,
            ProxyError::BadRequest | ProxyError::Connect | ProxyError::BadTarget => {
                grpc_code::INTERNAL
            }
            ProxyError::BodyTooLarge
            | ProxyError::HeadersTooLarge
            | ProxyError::UriTooLong
            | ProxyError::RateLimited => grpc_code::RESOURCE_EXHAUSTED,
            ProxyError::NoHealthyNode => grpc_code::UNAVAILABLE,
            // A client that stalls its own upload: the call's deadline-like failure.
            ProxyError::RequestTimeout => grpc_code::DEADLINE_EXCEEDED,
            ProxyError::Upstream(e) => match e.kind() {
                Kind::Timeout | Kind::ConnectTimeout => grpc_code::DEADLINE_EXCEEDED,
                Kind::ClientBody => grpc_code::INTERNAL,
                Kind::Connect | Kind::Broken => grpc_code::UNAVAILABLE,
            },
            ProxyError::UpstreamStatus(_) => grpc_code::UNAVAILABLE,
        }
    }

    /// The fixed message and JSON body: nothing internal can leak into either.
    fn text(&self) -> (&'static str, &'static str) {
        match self {
            ProxyError::NoRoute => answer!("no route"),
            ProxyError::BadRequest => answer!("malformed request"),
            ProxyError::Connect => answer!("CONNECT is not supported"),
            ProxyError::BadTarget => answer!("request target not allowed for this method"),
            ProxyError::BodyTooLarge => answer!("request body too large"),
            ProxyError::HeadersTooLarge => answer!("request headers too large"),
            ProxyError::UriTooLong => answer!("request target too long"),
            ProxyError::RateLimited => answer!("too many requests"),
            ProxyError::NoHealthyNode => answer!("no healthy upstream"),
            ProxyError::RequestTimeout => answer!("request timeout"),
            ProxyError::Upstream(e) => match e.kind() {
                Kind::Timeout | Kind::ConnectTimeout => answer!("upstream timeout"),
                Kind::ClientBody => answer!("malformed request"),
                Kind::Connect | Kind::Broken => answer!("upstream failed"),
            },
            ProxyError::UpstreamStatus(_) => answer!("upstream failed"),
        }
    }

    /// The JSON body of this answer.
    pub fn json_body(&self) -> &'static str {
        self.text().1
    }

    /// The JSON answer.
    pub fn into_response(self) -> Response<ResponseBody> {
        json_response(self.status(), self.json_body())
    }

    /// The gRPC-shaped answer: 200, `grpc-status`, `grpc-message`, no body.
    pub fn into_grpc_response(self) -> Response<ResponseBody> {
        let mut resp = Response::new(ResponseBody::full(""));
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert(
            GRPC_STATUS,
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        // The messages are printable ASCII without `%`: percent-encoding leaves them as they
        // are (a unit test holds every message to that), so no encoding at run time.
        h.insert(GRPC_MESSAGE, HeaderValue::from_static(self.text().0));
        resp
    }

    /// The answer in the shape the client understands: gRPC or JSON.
    pub fn into_response_for(self, grpc: bool) -> Response<ResponseBody> {
        if grpc {
            self.into_grpc_response()
        } else {
            self.into_response()
        }
    }

    /// The error hyper's HTTP/1 parser means by an automatic answer with this status (what
    /// the framing guard writes in its place).
    pub fn for_refused_head(status: u16) -> ProxyError {
        match status {
            431 => ProxyError::HeadersTooLarge,
            414 => ProxyError::UriTooLong,
            _ => ProxyError::BadRequest,
        }
    }
}

/// Why the HTTP/1 framing guard ([`crate::downstream::h1guard`]) refused a request head:
/// answered 400 with the connection closed, the reason in the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Violation {
    /// Both `Content-Length` and `Transfer-Encoding`.
    ContentLengthWithTransferEncoding = 1,
    /// `Transfer-Encoding` other than exactly one `chunked`.
    TransferEncodingNotChunked = 2,
    /// A line ended by LF alone.
    BareLf = 3,
    /// A CR not followed by LF, or a continuation line (obs-fold).
    MalformedLine = 4,
    /// An invalid `Content-Length`, or two that differ (hyper refuses both itself too).
    BadContentLength = 5,
    /// A method longer than `h1guard::MAX_METHOD_LEN`.
    MethodTooLong = 6,
}

impl Violation {
    /// The value stored in the guard's atomic (`Violation as u8`), back; `None` for 0.
    pub(crate) fn from_u8(v: u8) -> Option<Violation> {
        Some(match v {
            1 => Violation::ContentLengthWithTransferEncoding,
            2 => Violation::TransferEncodingNotChunked,
            3 => Violation::BareLf,
            4 => Violation::MalformedLine,
            5 => Violation::BadContentLength,
            6 => Violation::MethodTooLong,
            _ => return None,
        })
    }

    /// For the debug log.
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::ContentLengthWithTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            Violation::TransferEncodingNotChunked => "Transfer-Encoding other than chunked",
            Violation::BareLf => "line ended by a bare LF",
            Violation::MalformedLine => "malformed header line",
            Violation::BadContentLength => "invalid or conflicting Content-Length",
            Violation::MethodTooLong => "method too long",
        }
    }
}

/// `grpc-status`.
pub const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// Whether a request is gRPC: `content-type` is `application/grpc`, alone or followed by
/// `+subtype` or `;parameters` (compared without regard to case). `application/grpc-web`
/// is not (see the module docs).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

fn is_grpc_content_type(v: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    v.len() >= GRPC.len()
        && v[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(v.get(GRPC.len()), None | Some(b'+' | b';' | b' ' | b'\t'))
}

/// `grpc-message` encoding (gRPC over HTTP/2, "Responses"): the UTF-8 bytes outside
/// printable ASCII (0x20..=0x7E), and `%` itself, as `%XX`.
pub fn grpc_percent_encode(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for &b in msg.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// A small JSON answer.
pub fn json_response(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    fn every_error() -> Vec<ProxyError> {
        vec![
            ProxyError::NoRoute,
            ProxyError::BadRequest,
            ProxyError::Connect,
            ProxyError::BadTarget,
            ProxyError::BodyTooLarge,
            ProxyError::HeadersTooLarge,
            ProxyError::UriTooLong,
            ProxyError::RateLimited,
            ProxyError::NoHealthyNode,
            ProxyError::RequestTimeout,
            ProxyError::Upstream(UpstreamError::Timeout),
            ProxyError::Upstream(UpstreamError::ConnectTimeout),
            ProxyError::Upstream(UpstreamError::Connect(std::io::Error::other(
                "10.0.0.1:80 refused",
            ))),
            ProxyError::Upstream(UpstreamError::Read(std::io::Error::other("reset"))),
            ProxyError::Upstream(UpstreamError::TlsSettings(
                crate::upstream::TlsSettingsError::NoServerName,
            )),
            ProxyError::UpstreamStatus(503),
        ]
    }

    #[test]
    fn every_body_is_json_with_its_message_and_no_detail() {
        for e in every_error() {
            let (msg, body) = e.text();
            let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
            assert_eq!(v["error"], msg, "{e:?}");
            assert!(
                !body.contains("10.0.0.1") && !body.contains("reset"),
                "{body}"
            );
        }
    }

    #[test]
    fn grpc_messages_need_no_percent_encoding() {
        // `into_grpc_response` sends the message as it is: that is only right while
        // encoding would not change it.
        for e in every_error() {
            let msg = e.text().0;
            assert_eq!(grpc_percent_encode(msg), msg, "{e:?}");
        }
    }

    #[test]
    fn percent_encoding_follows_the_grpc_spec() {
        assert_eq!(grpc_percent_encode("a b~"), "a b~");
        assert_eq!(grpc_percent_encode("100%"), "100%25");
        assert_eq!(grpc_percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn the_fixed_grpc_codes() {
        use grpc_code::*;
        assert_eq!(ProxyError::NoHealthyNode.grpc_status(), UNAVAILABLE);
        assert_eq!(
            ProxyError::Upstream(UpstreamError::Closed).grpc_status(),
            UNAVAILABLE
        );
        assert_eq!(
            ProxyError::Upstream(UpstreamError::Timeout).grpc_status(),
            DEADLINE_EXCEEDED
        );
        assert_eq!(ProxyError::RateLimited.grpc_status(), RESOURCE_EXHAUSTED);
        assert_eq!(ProxyError::NoRoute.grpc_status(), UNIMPLEMENTED);
        assert_eq!(ProxyError::BadRequest.grpc_status(), INTERNAL);
        assert_eq!(ProxyError::BodyTooLarge.grpc_status(), RESOURCE_EXHAUSTED);
    }

    #[test]
    fn grpc_answer_is_trailers_only_shaped() {
        let resp = ProxyError::RateLimited.into_grpc_response();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(resp.headers()[GRPC_STATUS], "8");
        assert_eq!(resp.headers()[GRPC_MESSAGE], "too many requests");
        assert!(resp.body().is_end_stream(), "no body at all");
    }

    #[test]
    fn grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "Application/GRPC",
            "application/grpc; charset=utf-8",
            "application/grpc;x=1",
        ] {
            assert!(is_grpc_content_type(ct.as_bytes()), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpcx",
            "application/json",
            "application/grp",
            "",
        ] {
            assert!(!is_grpc_content_type(ct.as_bytes()), "{ct}");
        }
    }
}
