//! HTTP/1.0 clients, against the real binary and ApacheBench (`ab -k` speaks HTTP/1.0 with
//! `Connection: keep-alive`). HTTP/1.0 has no chunked encoding, so a response whose length is
//! not known in advance can only be ended by closing the connection: it must then say
//! `Connection: close`, not the `keep-alive` the client asked for (hyper alone would promise
//! keep-alive and close anyway, and `ab -k` fails such requests). A response with a length
//! keeps the connection alive, as asked.

mod common;

use std::process::Command;
use std::time::Duration;

use common::programs::{require, run};
use common::raw::RawConn;
use common::{single_pool_config, Backend, Behaviour, Switchyard};

const AB_TIMEOUT: Duration = Duration::from_secs(120);
const N: u32 = 200;

/// What `ab -k -n 200 -c 4` reports.
#[derive(Debug)]
struct Ab {
    complete: u32,
    failed: u32,
    keep_alive: u32,
    non_2xx: u32,
}

impl Ab {
    fn assert_all_succeeded(&self) {
        assert_eq!(
            (self.complete, self.failed, self.non_2xx),
            (N, 0, 0),
            "{self:?}"
        );
    }
}

fn ab(url: &str) -> Ab {
    let ab = require("ab", "apt-get install apache2-utils");
    let mut cmd = Command::new(ab);
    cmd.args(["-k", "-n", &N.to_string(), "-c", "4", "-s", "20", url]);
    let out = run(cmd, AB_TIMEOUT);
    let text = out.stdout_text();
    assert!(
        out.code == Some(0),
        "ab failed ({:?}): {text}\n{}",
        out.code,
        out.stderr
    );
    let field = |name: &str| -> u32 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ab {
        complete: field("Complete requests:"),
        failed: field("Failed requests:"),
        keep_alive: field("Keep-Alive requests:"),
        non_2xx: field("Non-2xx responses:"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_keep_alive_through_the_balancer_to_a_chunked_node_has_no_failures() {
    let node = Backend::start("chunked", Behaviour::SourceChunked(1000)).await;
    let sy = Switchyard::start(&single_pool_config("round_robin", &[node.addr], ""));

    let got = ab(&sy.url("/"));
    got.assert_all_succeeded();
    assert_eq!(node.count(), N as usize);

    // What the client is told: close, and the whole body before the close.
    let mut c = RawConn::connect(sy.http()).await;
    c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let r = c.read_response().await.expect("a response");
    assert_eq!(r.status, 200);
    assert!(r.closes(), "{r:?}");
    assert_eq!(
        r.header("transfer-encoding"),
        None,
        "no chunking for HTTP/1.0"
    );
    assert_eq!(r.body.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_keep_alive_to_a_node_with_lengths_keeps_connections_as_the_node_does() {
    let node = Backend::start("sized", Behaviour::Source(1000)).await;
    let direct = ab(&format!("http://{}/", node.addr));
    direct.assert_all_succeeded();

    let sy = Switchyard::start(&single_pool_config("round_robin", &[node.addr], ""));
    let got = ab(&sy.url("/"));
    got.assert_all_succeeded();
    assert_eq!(
        got.keep_alive, direct.keep_alive,
        "every request kept its connection, as against the node itself: {got:?} vs {direct:?}"
    );
    assert_eq!(got.keep_alive, N, "{got:?}");
}
