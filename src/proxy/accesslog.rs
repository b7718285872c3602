//! The access log: one structured line per request, written off the request path.
//!
//! Requests hand a finished [`Record`] to a bounded channel with `try_send`; one writer task
//! formats and writes the lines (JSON or logfmt) through a buffered writer, flushing
//! whenever the channel runs dry. If the writer cannot keep up and the channel fills, the
//! record is dropped and counted (`switchyard_access_log_dropped_total`): a slow disk must
//! never slow requests down.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{AccessLogConfig, AccessLogFormat};

/// Records buffered between requests and the writer; at ~200 bytes each, a few MiB.
const CHANNEL_CAPACITY: usize = 16 * 1024;

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct Record {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: http::Method,
    pub host: String,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub pool: String,
    pub node: String,
    pub attempts: u32,
    pub request_id: String,
}

/// The request side of the access log: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct AccessLog {
    tx: mpsc::Sender<Record>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Start the writer task; `None` when the access log is off.
    pub fn start(
        cfg: &AccessLogConfig,
        dropped: IntCounter,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> std::io::Result<Option<AccessLog>> {
        if cfg.format == AccessLogFormat::Off {
            return Ok(None);
        }
        let out: Box<dyn std::io::Write + Send> = match cfg.path.as_str() {
            "stderr" => Box::new(std::io::stderr()),
            "stdout" => Box::new(std::io::stdout()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let format = cfg.format;
        tracker.spawn(writer(rx, out, format, shutdown));
        Ok(Some(AccessLog { tx, dropped }))
    }

    /// Queue a record; drops and counts it when the writer is behind.
    pub fn log(&self, record: Record) {
        if self.tx.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

async fn writer(
    mut rx: mpsc::Receiver<Record>,
    out: Box<dyn std::io::Write + Send>,
    format: AccessLogFormat,
    shutdown: CancellationToken,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = String::with_capacity(512);
    loop {
        let record = tokio::select! {
            r = rx.recv() => r,
            // On shutdown, write what is queued, then stop.
            _ = shutdown.cancelled() => { rx.close(); rx.recv().await }
        };
        let Some(record) = record else { break };
        line.clear();
        format_record(&record, format, &mut line);
        // A failing log destination must not take the balancer down: the line is lost.
        let _ = out.write_all(line.as_bytes());
        while let Ok(r) = rx.try_recv() {
            line.clear();
            format_record(&r, format, &mut line);
            let _ = out.write_all(line.as_bytes());
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

/// Format one line (with its newline) into `out`.
pub fn format_record(r: &Record, format: AccessLogFormat, out: &mut String) {
    let ms = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let time = crate::util::timefmt::rfc3339(ms.as_millis() as u64, true);
    let duration_ms = r.duration.as_secs_f64() * 1000.0;
    match format {
        AccessLogFormat::Json => {
            let v = serde_json::json!({
                "time": time,
                "client": r.client.to_string(),
                "method": r.method.as_str(),
                "host": r.host,
                "path": r.path,
                "status": r.status,
                "bytes": r.bytes,
                "duration_ms": (duration_ms * 1000.0).round() / 1000.0,
                "pool": r.pool,
                "node": r.node,
                "attempts": r.attempts,
                "request_id": r.request_id,
            });
            let _ = write!(out, "{v}");
        }
        AccessLogFormat::Logfmt | AccessLogFormat::Off => {
            let _ = write!(
                out,
                "time={time} client={} method={} host={} path={} status={} bytes={} duration_ms={duration_ms:.3} pool={} node={} attempts={} request_id={}",
                r.client,
                r.method,
                logfmt_value(&r.host),
                logfmt_value(&r.path),
                r.status,
                r.bytes,
                logfmt_value(&r.pool),
                logfmt_value(&r.node),
                r.attempts,
                logfmt_value(&r.request_id),
            );
        }
    }
    out.push('\n');
}

/// Quote a logfmt value when it needs it.
fn logfmt_value(v: &str) -> String {
    if v.is_empty() {
        return "\"\"".to_string();
    }
    if v.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\')
    {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            client: "10.1.2.3".parse().expect("ip"),
            method: http::Method::GET,
            host: "api.example.com".into(),
            path: "/v1/users".into(),
            status: 200,
            bytes: 42,
            duration: Duration::from_micros(1500),
            pool: "api".into(),
            node: "127.0.0.1:9001".into(),
            attempts: 1,
            request_id: "abc".into(),
        }
    }

    #[test]
    fn json_line_has_every_field() {
        let mut s = String::new();
        format_record(&record(), AccessLogFormat::Json, &mut s);
        let v: serde_json::Value = serde_json::from_str(s.trim_end()).expect("valid JSON");
        for key in [
            "time",
            "client",
            "method",
            "host",
            "path",
            "status",
            "bytes",
            "duration_ms",
            "pool",
            "node",
            "attempts",
            "request_id",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {s}");
        }
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.5);
        assert!(s.ends_with('\n'));
    }

    #[test]
    fn logfmt_quotes_when_needed() {
        let mut r = record();
        r.path = "/a b".into();
        let mut s = String::new();
        format_record(&r, AccessLogFormat::Logfmt, &mut s);
        assert!(s.contains(r#"path="/a b""#), "{s}");
        assert!(s.contains("status=200 bytes=42"), "{s}");
    }
}
