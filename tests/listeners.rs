//! Listener changes on reload (issue 5): a bind added by a reload starts serving, a bind
//! removed stops accepting, and the binds that stay keep their open connections.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use common::client::{get, try_get};
use common::{pool_yaml, Backend, Behaviour, Switchyard, WAIT};

fn config(listeners: &[&str], backend: SocketAddr) -> String {
    let mut yaml = String::from("listeners:\n");
    for name in listeners {
        yaml.push_str(&format!("  - name: {name}\n    bind: 127.0.0.1:0\n"));
    }
    yaml.push_str("routes:\n  - pool: web\npools:\n");
    yaml.push_str(&pool_yaml("web", "round_robin", &[(backend, 1)], ""));
    yaml
}

/// The address a listener logged when it started (after a reload, too).
fn logged_addr(sy: &Switchyard, listener: &str) -> Option<SocketAddr> {
    sy.log_messages("listening")
        .iter()
        .rev()
        .find(|v| v["fields"]["listener"].as_str() == Some(listener))
        .and_then(|v| v["fields"]["addr"].as_str()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners_without_touching_the_others() {
    let backend = Backend::start("a", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(&["http"], backend.addr));
    let http = sy.addr("http");

    // A keep-alive connection on the bind that stays, opened before any reload.
    let stream = TcpStream::connect(http).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut send_on_kept = async || {
        let req = http::Request::get("/kept")
            .header("host", "x")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = sender
            .send_request(req)
            .await
            .expect("request on the kept connection");
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        status
    };
    assert_eq!(send_on_kept().await, 200);

    // Add a listener.
    sy.reload(&config(&["http", "extra"], backend.addr));
    let extra = logged_addr(&sy, "extra").expect("the added listener logged its address");
    assert_ne!(extra, http);
    let r = get(extra, "/via-extra").await;
    assert_eq!(r.status, 200, "the added listener serves");
    assert_eq!(&r.body[..], b"a");

    // The connection opened before the reload still works, on the same socket.
    assert_eq!(send_on_kept().await, 200);

    // Remove it again: it stops accepting; the other listener and its connection carry on.
    sy.reload(&config(&["http"], backend.addr));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if try_get(extra, "/after-removal").await.is_err() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the removed listener still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(send_on_kept().await, 200);
    assert_eq!(get(http, "/still").await.status, 200);
    assert!(
        sy.log_messages("listener removed: no longer accepting")
            .iter()
            .any(|v| v["fields"]["listener"].as_str() == Some("extra")),
        "the removal is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_cannot_bind_a_new_listener_is_rejected_whole() {
    let backend = Backend::start("a", Behaviour::Echo).await;
    let other = Backend::start("b", Behaviour::Echo).await;
    let sy = Switchyard::start(&config(&["http"], backend.addr));
    // A port that is taken: the backend's.
    let taken = backend.addr;
    let bad = format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\n  - name: clash\n    bind: {taken}\nroutes:\n  - pool: web\npools:\n{}",
        pool_yaml("web", "round_robin", &[(other.addr, 1)], "")
    );
    std::fs::write(sy.config_path(), &bad).expect("write the config");
    let before = sy
        .log_messages("config reload rejected; the old config keeps serving")
        .len();
    sy.signal("HUP");
    sy.wait_for_message(
        "config reload rejected; the old config keeps serving",
        before,
        WAIT,
    );
    // Nothing of the rejected file applies: the pool still points at backend `a`.
    let r = get(sy.addr("http"), "/").await;
    assert_eq!(&r.body[..], b"a", "the old config keeps serving");
}
