//! Raw HTTP/1.1 over a `TcpStream`, for tests that need byte-level control (PROXY headers,
//! slowloris, oversize heads, watching a connection close): write bytes, read one response,
//! or wait for the server to close. Every read has a timeout.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::within;
use super::WAIT;

/// A response read off the wire.
#[derive(Debug, Clone)]
pub struct RawResp {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connect to `addr`.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let s = within(
        &format!("connect to {addr}"),
        WAIT,
        TcpStream::connect(addr),
    )
    .await
    .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let _ = s.set_nodelay(true);
    s
}

/// `GET path` with `Host: h`, keep-alive, as bytes.
pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n").into_bytes()
}

/// Write all of `bytes`.
pub async fn write(s: &mut TcpStream, bytes: &[u8]) {
    within("writing to the balancer", WAIT, s.write_all(bytes))
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
}

/// Read one response (head, then a `Content-Length` body; without one, the body runs to
/// the end of the connection). Errors and an early close are returned, not panicked on.
pub async fn try_read_response(s: &mut TcpStream) -> io::Result<RawResp> {
    within("reading a response", WAIT, read_response_inner(s)).await
}

/// [`try_read_response`], panicking on failure.
pub async fn read_response(s: &mut TcpStream) -> RawResp {
    try_read_response(s)
        .await
        .unwrap_or_else(|e| panic!("reading a response: {e}"))
}

async fn read_response_inner(s: &mut TcpStream) -> io::Result<RawResp> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed after {} bytes, before a response head: {:?}",
                    buf.len(),
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf[head_end..].to_vec();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match len {
        Some(len) => {
            while body.len() < len {
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside the body",
                    ));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => {
            s.read_to_end(&mut body).await?;
        }
    }
    Ok(RawResp {
        status,
        headers,
        body,
    })
}

/// How a connection ended, seen from the client.
#[derive(Debug)]
pub struct Closed {
    /// Time from the call to the end of the connection.
    pub after: Duration,
    /// Bytes the server sent before closing.
    pub bytes: Vec<u8>,
    /// The read error, when it ended with one (a reset) rather than an orderly EOF.
    pub error: Option<io::ErrorKind>,
}

/// Read until the server closes the connection (EOF or reset); panics if it is still open
/// after `timeout`.
pub async fn wait_closed(s: &mut TcpStream, timeout: Duration) -> Closed {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let res = tokio::time::timeout(timeout, async {
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) => return None,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) => return Some(e.kind()),
            }
        }
    })
    .await;
    match res {
        Ok(error) => Closed {
            after: start.elapsed(),
            bytes,
            error,
        },
        Err(_) => panic!(
            "the connection was still open after {timeout:?} (received {:?})",
            String::from_utf8_lossy(&bytes)
        ),
    }
}
