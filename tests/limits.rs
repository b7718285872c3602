//! Connection-level limits (issue 7), against the real binary: `max_header_bytes` → 431 on
//! HTTP/1.1 and HTTP/2, `header_read_timeout` against slowloris and silent clients,
//! `idle_timeout` for idle keep-alive connections (separately from the header timeout, and
//! never for a request in flight), and `max_connections`.
//!
//! Small limits (1 s, 3 s) keep the tests short; every assertion on time is a lower bound
//! or a "before the other limit could have fired", never a tight upper bound.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;

use common::client::{get, within};
use common::raw::{connect, get_request, read_response, try_read_response, wait_closed, write};
use common::{metric, parse_metrics, single_pool_config, Backend, Behaviour, Switchyard, WAIT};

/// One listener to `backend` with these `limits` lines (indented by two spaces).
fn config(backend: SocketAddr, limits: &str) -> String {
    format!(
        "{}limits:\n{limits}",
        single_pool_config("round_robin", &[backend], "")
    )
}

async fn counter(sy: &Switchyard, name: &str, labels: &[(&str, &str)]) -> f64 {
    let r = get(sy.admin_addr(), "/metrics").await;
    metric(&parse_metrics(&r.text()), name, labels).unwrap_or(0.0)
}

async fn timeouts(sy: &Switchyard, which: &str) -> f64 {
    counter(
        sy,
        "switchyard_downstream_timeouts_total",
        &[("listener", "http"), ("timeout", which)],
    )
    .await
}

/// `GET /` with one extra header of `size` bytes of value.
fn big_request(size: usize) -> Vec<u8> {
    format!(
        "GET /big HTTP/1.1\r\nHost: test.local\r\nX-Big: {}\r\n\r\n",
        "a".repeat(size)
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_request_heads_are_answered_431_on_http1_and_http2() {
    let backend = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(backend.addr, "  max_header_bytes: 16KiB\n"));
    let addr = sy.http();

    // HTTP/1.1 under the limit: served.
    let mut s = connect(addr).await;
    write(&mut s, &big_request(12 * 1024)).await;
    assert_eq!(read_response(&mut s).await.status, 200);
    assert_eq!(backend.count(), 1);

    // Over it: 431, and the request never reaches the backend.
    let mut s = connect(addr).await;
    write(&mut s, &big_request(20 * 1024)).await;
    let resp = try_read_response(&mut s)
        .await
        .unwrap_or_else(|e| panic!("no answer to an oversize head: {e}"));
    assert_eq!(resp.status, 431, "{:?}", resp.headers);
    // A head that never ends, larger than the limit: 431 as soon as the limit is passed.
    let mut s = connect(addr).await;
    let mut endless = b"GET / HTTP/1.1\r\nHost: test.local\r\n".to_vec();
    for i in 0..400 {
        endless.extend_from_slice(format!("X-H{i}: {}\r\n", "b".repeat(60)).as_bytes());
    }
    write(&mut s, &endless).await;
    let resp = try_read_response(&mut s)
        .await
        .unwrap_or_else(|e| panic!("no answer to an endless head: {e}"));
    assert_eq!(resp.status, 431);
    assert_eq!(backend.count(), 1, "oversize heads are not forwarded");

    // HTTP/2 (h2c): SETTINGS_MAX_HEADER_LIST_SIZE gives the same answer per stream.
    let tcp = connect(addr).await;
    let (mut sender, conn) = within("h2c handshake", WAIT, async move {
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake")
    })
    .await;
    tokio::spawn(conn);
    for (size, want) in [
        (12 * 1024, StatusCode::OK),
        (20 * 1024, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    ] {
        let req = Request::builder()
            .method(Method::GET)
            .uri("http://test.local/h2")
            .header("x-big", "c".repeat(size))
            .body(Empty::<Bytes>::new())
            .expect("request");
        within("h2 ready", WAIT, sender.ready())
            .await
            .expect("h2 connection usable");
        let resp = within("h2 request", WAIT, sender.send_request(req))
            .await
            .expect("h2 response");
        assert_eq!(resp.status(), want, "x-big of {size} bytes over h2");
    }
    assert_eq!(backend.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_cut_at_header_read_timeout_while_others_are_served() {
    let backend = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(
        backend.addr,
        "  header_read_timeout: 1s\n  idle_timeout: 30s\n",
    ));
    let addr = sy.http();

    // The slow client: a complete head, dribbled one byte every 250 ms. Uncut, it would
    // complete after ~10 s and be answered 200.
    let head = b"GET /slow HTTP/1.1\r\nHost: test.local\r\nX-Slow: abcdefghijklmnop\r\n\r\n";
    let stream = connect(addr).await;
    let (mut rd, mut wr) = stream.into_split();
    let dribble = tokio::spawn(async move {
        let mut sent = 0;
        for b in head.iter() {
            if wr.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        (sent, head.len())
    });
    let started = Instant::now();
    let closed = tokio::spawn(async move {
        let mut buf = Vec::new();
        let res = within(
            "the slowloris connection to be closed",
            WAIT,
            tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut buf),
        )
        .await;
        (started.elapsed(), buf, res.is_err())
    });

    // Meanwhile other clients are served normally.
    let mut served = 0;
    while !closed.is_finished() {
        let r = get(addr, "/normal").await;
        assert_eq!(r.status, StatusCode::OK);
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (after, answered, _reset) = closed.await.expect("reader task");
    assert!(
        answered.is_empty(),
        "the slow head was answered: {:?}",
        String::from_utf8_lossy(&answered)
    );
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before header_read_timeout"
    );
    assert!(
        served >= 3,
        "only {served} normal requests while the slow one waited"
    );
    let (sent, total) = within("the dribbling task", WAIT, dribble)
        .await
        .expect("dribble task");
    assert!(
        sent < total,
        "the whole slow head was sent ({sent} bytes) before the cut"
    );
    assert!(
        backend.requests().iter().all(|r| r.target != "/slow"),
        "the slow request reached the backend"
    );
    assert_eq!(timeouts(&sy, "header_read").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_header_read_timeout() {
    let backend = Backend::start("b", Behaviour::Echo).await;
    // idle_timeout longer than the test's whole wait: only header_read_timeout can close it.
    let sy = Switchyard::start(&config(
        backend.addr,
        "  header_read_timeout: 1s\n  idle_timeout: 1m\n",
    ));
    let mut s = connect(sy.http()).await;
    let closed = wait_closed(&mut s, WAIT).await;
    assert!(closed.bytes.is_empty());
    assert!(
        closed.after >= Duration::from_millis(900),
        "{:?}",
        closed.after
    );
    assert_eq!(timeouts(&sy, "header_read").await, 1.0);
    assert_eq!(timeouts(&sy, "idle").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_outlive_header_read_timeout_and_close_after_idle_timeout() {
    let backend = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(
        backend.addr,
        "  header_read_timeout: 1s\n  idle_timeout: 3s\n",
    ));
    let mut s = connect(sy.http()).await;
    write(&mut s, &get_request("/first")).await;
    assert_eq!(read_response(&mut s).await.status, 200);

    // Idle for twice header_read_timeout: still open (hyper's own header timeout would have
    // closed it after 1 s), and the next request on it is served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    write(&mut s, &get_request("/second")).await;
    let resp = try_read_response(&mut s)
        .await
        .unwrap_or_else(|e| panic!("the keep-alive connection was closed while idle: {e}"));
    assert_eq!(resp.status, 200);
    assert_eq!(backend.count(), 2);
    assert_eq!(
        backend.connections(),
        1,
        "both requests on one upstream connection"
    );

    // Then idle for good: closed after idle_timeout, without a byte.
    let closed = wait_closed(&mut s, WAIT).await;
    assert!(
        closed.bytes.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&closed.bytes)
    );
    assert!(
        closed.after >= Duration::from_secs(2),
        "closed {:?} after the last response: too early for idle_timeout (3s)",
        closed.after
    );
    assert_eq!(timeouts(&sy, "idle").await, 1.0);
    assert_eq!(timeouts(&sy, "header_read").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_is_not_cut_by_either_timeout() {
    // The backend takes longer than both limits to answer.
    let backend = Backend::start("slow", Behaviour::Slow(Duration::from_millis(2500))).await;
    let sy = Switchyard::start(&config(
        backend.addr,
        "  header_read_timeout: 1s\n  idle_timeout: 2s\n",
    ));
    let mut s = connect(sy.http()).await;
    write(&mut s, &get_request("/slow")).await;
    let resp = try_read_response(&mut s)
        .await
        .unwrap_or_else(|e| panic!("a request in flight was cut: {e}"));
    assert_eq!(resp.status, 200);
    assert_eq!(
        timeouts(&sy, "idle").await + timeouts(&sy, "header_read").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_idle_for_idle_timeout_get_a_goaway() {
    let backend = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(
        backend.addr,
        "  header_read_timeout: 1s\n  idle_timeout: 3s\n",
    ));
    let tcp = connect(sy.http()).await;
    let (mut sender, conn) = within("h2c handshake", WAIT, async move {
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake")
    })
    .await;
    let conn = tokio::spawn(conn);
    let mut last_response = Instant::now();
    for (i, pause) in [0u64, 2000].into_iter().enumerate() {
        // The second request comes after an idle pause longer than header_read_timeout.
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let req = Request::builder()
            .uri(format!("http://test.local/h2-{i}"))
            .body(Empty::<Bytes>::new())
            .expect("request");
        within("h2 ready", WAIT, sender.ready())
            .await
            .unwrap_or_else(|e| panic!("h2 connection closed while idle {pause} ms: {e}"));
        let resp = within("h2 request", WAIT, sender.send_request(req))
            .await
            .expect("h2 response");
        assert_eq!(resp.status(), StatusCode::OK);
        let _ = within("h2 body", WAIT, resp.into_body().collect()).await;
        last_response = Instant::now();
    }
    // Then idle: the server ends the connection (GOAWAY, then close); the client's
    // connection task ends without a protocol error.
    let ended = within("the idle h2 connection to be closed", WAIT, conn)
        .await
        .expect("h2 connection task");
    let after = last_response.elapsed();
    assert!(
        ended.is_ok(),
        "h2 connection ended with an error: {ended:?}"
    );
    assert!(after >= Duration::from_secs(2), "closed after {after:?}");
    assert_eq!(timeouts(&sy, "idle").await, 1.0);
    assert_eq!(timeouts(&sy, "header_read").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_extra_connection_and_recovers() {
    let backend = Backend::start("b", Behaviour::Echo).await;
    // Long timeouts: a connection that is not refused stays open for the whole test.
    let sy = Switchyard::start(&config(
        backend.addr,
        "  max_connections: 3\n  header_read_timeout: 1m\n  idle_timeout: 1m\n",
    ));
    let addr = sy.http();

    let mut open = Vec::new();
    for i in 0..3 {
        let mut s = connect(addr).await;
        write(&mut s, &get_request(&format!("/open-{i}"))).await;
        assert_eq!(read_response(&mut s).await.status, 200);
        open.push(s);
    }
    common::wait_until("three connections counted active", WAIT, || async {
        counter(
            &sy,
            "switchyard_downstream_connections_active",
            &[("listener", "http")],
        )
        .await
            == 3.0
    })
    .await;

    // The fourth is accepted by the kernel, then closed at once without an answer.
    let mut extra = connect(addr).await;
    let _ = extra.write_all(&get_request("/extra")).await;
    let closed = wait_closed(&mut extra, WAIT).await;
    assert!(
        closed.bytes.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&closed.bytes)
    );
    assert_eq!(
        counter(
            &sy,
            "switchyard_downstream_connections_refused_total",
            &[("listener", "http")]
        )
        .await,
        1.0
    );

    // The three keep working.
    for (i, s) in open.iter_mut().enumerate() {
        write(s, &get_request(&format!("/again-{i}"))).await;
        assert_eq!(read_response(s).await.status, 200);
    }

    // One closes; a new connection is then served (once the balancer has seen the close).
    drop(open.pop());
    common::wait_until("a new connection served after one closed", WAIT, || async {
        let mut s = connect(addr).await;
        if s.write_all(&get_request("/new")).await.is_err() {
            return false;
        }
        matches!(try_read_response(&mut s).await, Ok(r) if r.status == 200)
    })
    .await;
    assert!(backend.requests().iter().any(|r| r.target == "/new"));
    assert!(backend.requests().iter().all(|r| r.target != "/extra"));
}
