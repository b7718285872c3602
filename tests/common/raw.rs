//! Raw HTTP/1.1 over TCP for the tests that must control every byte (PROXY headers,
//! slowloris, oversize heads, smuggling, malformed heads, pipelining, bodies cut mid-way):
//! write exactly these bytes, read exactly what comes back, or wait for the server to close.
//! Two shapes: free functions over a `TcpStream` (one response per read), and [`RawConn`],
//! which keeps unread bytes for pipelined responses and chunked bodies. Every read has a
//! timeout.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::within;
use super::WAIT;

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResp {
    pub status: u16,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields after a chunked body ([`RawConn`] only), names in lower case.
    pub trailers: Vec<(String, String)>,
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

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The response says the connection closes after it.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// Check that this is an answer of the balancer's own with `status`, as every one is:
    /// `content-type: application/json`, an `x-request-id`, a body `{"error": "..."}`.
    /// Returns the error text.
    pub fn json_error(&self, name: &str, status: u16) -> String {
        assert_eq!(self.status, status, "{name}: {self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{name}: {self:?}"
        );
        assert!(
            self.header("x-request-id").is_some_and(|v| !v.is_empty()),
            "{name}: {self:?}"
        );
        let v: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {:?}", self.text()));
        v["error"]
            .as_str()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| panic!("{name}: no error text in {v}"))
            .to_string()
    }
}

/// Send `bytes` on a fresh connection, read the one answer, and check that it says
/// `Connection: close` and the connection then closes. A write error (the balancer closed
/// while the rest was being written) is fine: the answer is what counts.
pub async fn answer_then_close(addr: SocketAddr, name: &str, bytes: &[u8]) -> RawResp {
    let mut c = RawConn::connect(addr).await;
    let _ = c.send(bytes).await;
    let r = c
        .read_response()
        .await
        .unwrap_or_else(|| panic!("{name}: the connection closed without an answer"));
    assert!(r.closes(), "{name}: says Connection: close: {r:?}");
    assert_eq!(c.after(WAIT).await, After::Closed, "{name}: left open");
    r
}

/// What the connection did after the responses read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// The peer closed (FIN) or reset the connection.
    Closed,
    /// Bytes arrived: `n` of them.
    Data(usize),
    /// Nothing within the wait.
    Open,
}

/// A client connection with its unread bytes.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect to the balancer");
        let _ = stream.set_nodelay(true);
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Write `bytes`; a write error (the peer already closed) is returned, not a panic.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .map_err(|_| std::io::Error::other("write timed out"))?
    }

    /// Read more bytes into the buffer; `Ok(0)` at EOF, `Err` on reset or timeout.
    async fn fill(&mut self, wait: Duration) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(wait, self.stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"))??;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Read one response (Content-Length, chunked, or to EOF); `None` if the connection
    /// closed or was reset before a complete one arrived. Panics on a timeout.
    pub async fn read_response(&mut self) -> Option<RawResp> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            match self.fill(WAIT).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    panic!(
                        "no complete response head within {WAIT:?}; got {:?}",
                        self.lossy()
                    )
                }
                Err(_) => return None,
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let (status, headers) =
            parse_head(&head).unwrap_or_else(|| panic!("not a response head: {head:?}"));
        let mut resp = RawResp {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Some(resp);
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().expect("a numeric content-length");
            while self.buf.len() < len {
                match self.fill(WAIT).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let line_end = loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        break i;
                    }
                    match self.fill(WAIT).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                };
                let size_str = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {size_str:?}"));
                self.buf.drain(..line_end + 2);
                if size == 0 {
                    // Trailer lines, then the empty line that ends the message.
                    loop {
                        let end = loop {
                            if let Some(i) = find(&self.buf, b"\r\n") {
                                break i;
                            }
                            match self.fill(WAIT).await {
                                Ok(0) | Err(_) => return None,
                                Ok(_) => {}
                            }
                        };
                        let line: Vec<u8> = self.buf.drain(..end + 2).take(end).collect();
                        if line.is_empty() {
                            break;
                        }
                        let line = String::from_utf8_lossy(&line).into_owned();
                        if let Some((k, v)) = line.split_once(':') {
                            resp.trailers
                                .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                        }
                    }
                    break;
                }
                while self.buf.len() < size + 2 {
                    match self.fill(WAIT).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                }
                resp.body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
            }
        } else {
            // Delimited by the end of the connection.
            loop {
                match self.fill(WAIT).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            resp.body = std::mem::take(&mut self.buf);
        }
        Some(resp)
    }

    /// Whether the connection closes (or has closed), waiting at most `wait` for it.
    pub async fn after(&mut self, wait: Duration) -> After {
        if !self.buf.is_empty() {
            return After::Data(self.buf.len());
        }
        match self.fill(wait).await {
            Ok(0) => After::Closed,
            Ok(n) => After::Data(n),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => After::Open,
            Err(_) => After::Closed,
        }
    }

    fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Status and headers (names lower-cased) of a response head, without the blank line.
fn parse_head(head: &str) -> Option<(u16, Vec<(String, String)>)> {
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers))
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
    let (status, headers) = parse_head(head.trim_end())
        .ok_or_else(|| io::Error::other(format!("bad response head {head:?}")))?;
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
        trailers: Vec::new(),
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
