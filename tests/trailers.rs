//! Trailers both ways: response trailers from an HTTP/2 node and from a chunked HTTP/1.1
//! node reach HTTP/2 clients and chunked HTTP/1.1 clients; request trailers reach the node,
//! whether the body is buffered (small) or streamed (large), over HTTP/1.1 and HTTP/2.

mod common;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use common::backend::{BoxError, Fnv};
use common::client::H2;
use common::raw::RawConn;
use common::{pool_yaml, Backend, Behaviour, Switchyard};

/// Two pools over the same trailers backend: `/h1` through HTTP/1.1, `/h2` through h2c.
fn config(node: SocketAddr) -> String {
    format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nroutes:\n  - path_prefix: /h2\n    pool: h2\n  - pool: h1\npools:\n{}{}    upstream_protocol: h2\n",
        pool_yaml("h1", "round_robin", &[(node, 1)], ""),
        pool_yaml("h2", "round_robin", &[(node, 1)], ""),
    )
}

fn body_with_trailers(
    len: usize,
) -> (Bytes, http_body_util::combinators::BoxBody<Bytes, BoxError>) {
    let data = Bytes::from(vec![b'z'; len]);
    let mut t = HeaderMap::new();
    t.insert(
        "x-sent-trailer",
        HeaderValue::from_static("from-the-client"),
    );
    let frames = vec![
        Ok::<_, BoxError>(Frame::data(data.clone())),
        Ok(Frame::trailers(t)),
    ];
    (
        data,
        StreamBody::new(futures_util::stream::iter(frames)).boxed(),
    )
}

fn checksum(data: &[u8]) -> String {
    let mut f = Fnv::new();
    f.update(data);
    f.finish().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_both_ways_between_http2_clients_and_either_node() {
    let node = Backend::start("trailers", Behaviour::Trailers).await;
    let sy = Switchyard::start(&config(node.addr));
    let mut h2 = H2::connect(sy.http()).await;
    // Small (buffered for retries) and large (streamed) request bodies, to an HTTP/1.1 node
    // and to an HTTP/2 node; trailers announced with `Trailer` or not.
    for path in ["/h1/t", "/h2/t"] {
        for (len, announced) in [(10usize, false), (10, true), (300 * 1024, true)] {
            let (data, body) = body_with_trailers(len);
            let mut headers = vec![("te", "trailers")];
            if announced {
                headers.push(("trailer", "x-sent-trailer"));
            } else {
                // A length makes a small body buffered: trailers need no announcement there.
                headers.push(("content-length", "10"));
            }
            let r = h2
                .send_with(Method::POST, "t.example", path, &headers, body)
                .await;
            assert_eq!(r.status, 200, "{path} {len}: {}", r.text());
            let j = r.json();
            assert_eq!(j["len"].as_u64(), Some(len as u64), "{path} {len}");
            assert_eq!(
                j["trailers"]["x-sent-trailer"].as_str(),
                Some("from-the-client"),
                "{path} {len}: the request trailer reached the node: {j}"
            );
            assert_eq!(
                r.trailers.get("x-checksum").map(|v| v.to_str().unwrap()),
                Some(checksum(&data).as_str()),
                "{path} {len}: the response trailer reached the client"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_reach_a_chunked_http1_client() {
    let node = Backend::start("trailers", Behaviour::Trailers).await;
    let sy = Switchyard::start(&config(node.addr));
    for path in ["/h1/t", "/h2/t"] {
        let mut conn = RawConn::connect(sy.http()).await;
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\ntrailer: x-sent-trailer\r\nte: trailers\r\n\r\n\
             3\r\nabc\r\n0\r\nx-sent-trailer: from-the-client\r\n\r\n"
        );
        conn.send(req.as_bytes()).await.expect("write");
        let resp = conn.read_response().await.expect("a response");
        assert_eq!(resp.status, 200, "{path}: {}", resp.text());
        let text = resp.text();
        assert!(
            text.contains(r#""x-sent-trailer":"from-the-client""#),
            "{path}: the request trailer reached the node: {text}"
        );
        // Announced in the head, sent after the last chunk.
        assert_eq!(resp.header("trailer"), Some("x-checksum"), "{path}");
        assert_eq!(
            resp.trailer("x-checksum"),
            Some(checksum(b"abc").as_str()),
            "{path}: the trailer follows the last chunk: {:?}",
            resp.trailers
        );
    }
}
