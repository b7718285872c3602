//! hypercorn (Python, h11 and h2) as the node, over HTTP/1.1 and over h2c
//! (`upstream_protocol: h2`), serving `tests/interop/asgi_app.py`, with curl as the client.
//!
//! Each scenario runs straight against hypercorn and again through switchyard (with an
//! HTTP/1.1 and an h2c client): the application's view of the request (method, path, query,
//! Host, `te`, body length and hash) and the answer (status, length, body) must agree.
//! Then what only works when a proxy gets HTTP/2 details right: response trailers from an
//! HTTP/2 node reach HTTP/2 and chunked HTTP/1.1 clients, and a streamed answer that lasts
//! longer than `timeouts.request` arrives whole (that timeout ends when the response head
//! arrives; the body is bounded by `timeouts.idle`).

mod common;

use serde_json::Value;

use common::thirdparty::{
    compare_runs, curl, describe_body, one_node_config, Case, CurlHttp, CurlResponse, Hypercorn,
};
use common::{unique_dir, Switchyard};

/// The Host every request is sent with.
const HOST: &str = "app.interop.test:8080";

/// Which protocol switchyard speaks to hypercorn (and the direct client too).
#[derive(Clone, Copy, Debug)]
enum Upstream {
    Http1,
    H2c,
}

impl Upstream {
    fn pool(self) -> &'static str {
        match self {
            Upstream::Http1 => "    timeouts: {connect: 2s, request: 20s}\n",
            Upstream::H2c => {
                "    upstream_protocol: h2\n    timeouts: {connect: 2s, request: 20s}\n"
            }
        }
    }

    fn client(self) -> CurlHttp {
        match self {
            Upstream::Http1 => CurlHttp::Http11,
            Upstream::H2c => CurlHttp::H2c,
        }
    }
}

/// How an outcome is compared.
#[derive(Clone, Copy)]
enum Seen {
    /// The application's view of the request (the `/echo`-like JSON), without what a
    /// proxy adds or may reframe: `content-length` is absent when a chunked body becomes
    /// HTTP/2 frames; `X-Forwarded-For` is reduced to whether it is what this run should
    /// show (none straight to hypercorn, `127.0.0.1` through switchyard).
    App,
    /// The answer: status, length, body.
    Answer,
}

fn view(seen: Seen, run: &str, r: &CurlResponse) -> String {
    let answer = format!(
        "curl exit {:?}, status {}, content-length {:?}, body {}",
        r.exit_code,
        r.status,
        r.header("content-length"),
        describe_body(&r.body)
    );
    let Seen::App = seen else {
        return answer;
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&r.body) else {
        return answer;
    };
    let Some(o) = v.as_object_mut() else {
        return answer;
    };
    o.remove("content_length");
    let want_xff = (run != "direct").then_some("127.0.0.1");
    let xff = o.remove("x_forwarded_for");
    if xff.as_ref().and_then(Value::as_str) != want_xff {
        return format!(
            "status {} {v}, X-Forwarded-For {xff:?} (want {want_xff:?})",
            r.status
        );
    }
    format!("status {} {v}", r.status)
}

fn requests_agree(upstream: Upstream) {
    let hc = Hypercorn::start();
    let sy = Switchyard::start(&one_node_config(hc.addr, upstream.pool()));
    let dir = unique_dir("hypercorn-bodies");
    let upload = dir.join("upload");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 256) as u8).collect();
    std::fs::write(&upload, bytes).expect("write the upload");
    let file_arg = format!("@{}", upload.display());
    let file_arg = file_arg.as_str();
    let host = format!("Host: {HOST}");
    let direct_base = format!("http://{}", hc.addr);
    let through_base = format!("http://{}", sy.http());
    let runs = [
        ("direct", upstream.client(), direct_base.as_str()),
        ("through/http1.1", CurlHttp::Http11, through_base.as_str()),
        ("through/h2c", CurlHttp::H2c, through_base.as_str()),
    ];
    let case = |name, args, path, how| Case {
        name,
        args,
        path,
        how,
    };
    let cases = vec![
        case(
            "GET with a query",
            vec!["-H", "x-interop: one"],
            "/echo/a%20b?q=1&r=%2F",
            Seen::App,
        ),
        case(
            "POST 300 kB with a length",
            vec!["--data-binary", file_arg],
            "/upload",
            Seen::App,
        ),
        case(
            // HTTP/1.1 sends it chunked; curl sends an HTTP/2 body with no length.
            "POST 300 kB without a length",
            vec![
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                file_arg,
            ],
            "/upload",
            Seen::App,
        ),
        case("DELETE", vec!["-X", "DELETE"], "/thing/7", Seen::App),
        case(
            "GET 1 MiB with a length",
            vec![],
            "/bytes?size=1048576",
            Seen::Answer,
        ),
        case(
            "GET 1 MiB without a length",
            vec![],
            "/bytes?size=1048576&chunked=1",
            Seen::Answer,
        ),
        case("HEAD", vec!["--head"], "/bytes?size=1000", Seen::Answer),
        case(
            "GET a short event stream",
            vec![],
            "/stream?n=4&interval=0.05",
            Seen::Answer,
        ),
    ];
    let differ = compare_runs(&runs, &cases, &["-H", &host], |seen, run, r| {
        view(*seen, run, r)
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        differ.is_empty(),
        "hypercorn as {upstream:?} node: switchyard's answers differ from hypercorn's own:\n{}",
        differ.join("\n")
    );
}

#[test]
fn hypercorn_http1_node_answers_the_same_through_switchyard() {
    requests_agree(Upstream::Http1);
}

#[test]
fn hypercorn_h2c_node_answers_the_same_through_switchyard() {
    requests_agree(Upstream::H2c);
}

#[test]
fn hypercorn_h2c_response_trailers_reach_http2_and_chunked_http1_clients() {
    // hypercorn sends trailers over HTTP/2 only, and only to a request with `te: trailers`:
    // the proxy must pass that on to an HTTP/2 node and bring the trailers back, as HTTP/2
    // trailers or as the trailer section of a chunked HTTP/1.1 answer.
    let hc = Hypercorn::start();
    let sy = Switchyard::start(&one_node_config(hc.addr, Upstream::H2c.pool()));
    let te = ["-H", "TE: trailers"];
    let direct = curl(CurlHttp::H2c, &hc.url("/trailers"), &te);
    let names: Vec<&str> = direct.trailers.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        direct.ok() && names == ["x-checksum", "x-done"],
        "straight from hypercorn over h2c: want trailers x-checksum and x-done, got {} {:?} {}",
        direct.summary(),
        direct.trailers,
        direct.text()
    );
    let mut differ = Vec::new();
    for http in [CurlHttp::H2c, CurlHttp::Http11] {
        let r = curl(http, &sy.url("/trailers"), &te);
        if !r.ok() || r.trailers != direct.trailers || r.body != direct.body {
            differ.push(format!(
                "  {http:?} client: {}, trailers {:?}, body {}",
                r.summary(),
                r.trailers,
                describe_body(&r.body)
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "hypercorn's response trailers {:?} (body {}) do not reach clients through switchyard:\n{}",
        direct.trailers,
        describe_body(&direct.body),
        differ.join("\n")
    );
}

#[test]
fn a_stream_longer_than_the_request_timeout_arrives_whole() {
    // 17 events 0.5 s apart: about 8 s, more than twice `timeouts.request`. That timeout
    // ends when the response head arrives; the body never pauses for long.
    let hc = Hypercorn::start();
    let sy = Switchyard::start(&one_node_config(
        hc.addr,
        "    timeouts: {connect: 2s, request: 3s}\n",
    ));
    let path = "/stream?n=17&interval=0.5";
    let direct_url = hc.url(path);
    let through_url = sy.url(path);
    // Both at once: the test takes one stream's time, not two.
    let direct = std::thread::spawn(move || curl(CurlHttp::Http11, &direct_url, &[]));
    let through = curl(CurlHttp::Http11, &through_url, &[]);
    let direct = direct.join().expect("the direct curl run");
    let events = |r: &CurlResponse| r.text().matches("data: ").count();
    assert!(
        direct.ok() && events(&direct) == 18,
        "straight from hypercorn: want 17 events and the end, got {} with {} events",
        direct.summary(),
        events(&direct)
    );
    assert!(
        through.ok() && through.body == direct.body,
        "through switchyard with timeouts.request 3s: {} with {} of {} events",
        through.summary(),
        events(&through),
        events(&direct)
    );
}
