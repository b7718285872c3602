//! Raw HTTP/1.1 over TCP for the tests that must control every byte (smuggling, malformed
//! heads, pipelining, bodies cut mid-way): write exactly these bytes, read exactly what
//! comes back. Every read has a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResp {
    pub status: u16,
    /// Header names in lower case, values as sent.
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

    /// The response says the connection closes after it.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
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
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut resp = RawResp {
            status,
            headers,
            body: Vec::new(),
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
                while self.buf.len() < size + 2 {
                    match self.fill(WAIT).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                }
                resp.body.extend(self.buf.drain(..size));
                self.buf.drain(..2);
                if size == 0 {
                    break;
                }
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
