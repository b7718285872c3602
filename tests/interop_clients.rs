//! Third-party clients through switchyard: curl (HTTP/1.0, HTTP/1.1, h2c), ApacheBench
//! (`ab`, HTTP/1.0, with and without keep-alive) and h2load (h2c, many streams on few
//! connections), against nginx as the node.
//!
//! Each client runs straight against nginx and through switchyard, to a file nginx sends
//! with a length and to a page it sends without one (chunked to HTTP/1.1, delimited by the
//! close to HTTP/1.0): every request must complete through switchyard as it does
//! directly. Switchyard's own answers (404, 502) must reach each client intact too.

mod common;

use common::thirdparty::{
    ab, chunked_page, compare_runs, curl, describe_body, file_bytes, h2load, one_node_config,
    AbReport, Case, CurlHttp, Nginx, NginxProtocol, NGINX_CHUNKED_PAGE, NGINX_SMALL_FILE,
    NGINX_SMALL_FILE_SIZE,
};
use common::{refusing_addr, Switchyard};

/// Requests and concurrency of each ab run: enough to reuse connections many times,
/// little enough for a debug build on a shared 2-core machine.
const AB_REQUESTS: u32 = 200;
const AB_CONCURRENCY: u32 = 4;

/// Switchyard with `nginx` as its only node; `pool_extra` is added to the pool.
fn in_front_of(nginx: &Nginx, pool_extra: &str) -> Switchyard {
    Switchyard::start(&one_node_config(
        nginx.addr,
        &format!("    timeouts: {{connect: 2s, request: 20s}}\n{pool_extra}"),
    ))
}

fn ab_problems(report: &AbReport) -> Option<String> {
    let ok = report.aborted.is_none()
        && report.complete == u64::from(AB_REQUESTS)
        && report.failed == 0
        && report.non_2xx == 0;
    (!ok).then(|| {
        format!(
            "{} complete, {} failed, {} non-2xx, {} keep-alive{}",
            report.complete,
            report.failed,
            report.non_2xx,
            report.keep_alive,
            match &report.aborted {
                Some(why) => format!("; ab gave up: {why}"),
                None => String::new(),
            }
        )
    })
}

#[test]
fn ab_completes_every_request_with_and_without_keep_alive() {
    let nginx = Nginx::start(NginxProtocol::Http1);
    let sy = in_front_of(&nginx, "");
    let mut problems = Vec::new();
    for (what, path) in [
        ("with a length", NGINX_SMALL_FILE),
        ("without a length", NGINX_CHUNKED_PAGE),
    ] {
        for keep_alive in [false, true] {
            let how = format!("{what}, {}", if keep_alive { "-k" } else { "no -k" });
            let direct = ab(&nginx.url(path), AB_REQUESTS, AB_CONCURRENCY, keep_alive);
            if let Some(p) = ab_problems(&direct) {
                panic!("ab straight to nginx ({how}): {p}\n{}", direct.output);
            }
            let through = ab(&sy.url(path), AB_REQUESTS, AB_CONCURRENCY, keep_alive);
            if let Some(p) = ab_problems(&through) {
                problems.push(format!("  {how}: {p}"));
            } else if through.document_length != direct.document_length {
                problems.push(format!(
                    "  {how}: document length {} through switchyard, {} directly",
                    through.document_length, direct.document_length
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "ab -n {AB_REQUESTS} -c {AB_CONCURRENCY} (HTTP/1.0) through switchyard to nginx \
         (every run straight to nginx: {AB_REQUESTS} complete, 0 failed):\n{}",
        problems.join("\n")
    );
}

#[test]
fn curl_gets_the_same_over_http10_http11_and_h2c() {
    let nginx = Nginx::start(NginxProtocol::Http1);
    let sy = in_front_of(&nginx, "");
    let direct = format!("http://{}", nginx.addr);
    let through = format!("http://{}", sy.http());
    let mut differ = Vec::new();
    for http in [CurlHttp::Http10, CurlHttp::Http11, CurlHttp::H2c] {
        // nginx here speaks HTTP/1.x only: an h2c client's reference is HTTP/1.1 directly.
        let reference = match http {
            CurlHttp::H2c => CurlHttp::Http11,
            other => other,
        };
        let through_name = format!("through/{http:?}");
        let runs = [
            ("direct", reference, direct.as_str()),
            (through_name.as_str(), http, through.as_str()),
        ];
        let case = |name, args, path| Case {
            name,
            args,
            path,
            how: (),
        };
        let cases = vec![
            case("GET a file with a length", vec![], NGINX_SMALL_FILE),
            case("HEAD a file", vec!["--head"], NGINX_SMALL_FILE),
            case("GET a page without a length", vec![], NGINX_CHUNKED_PAGE),
            case("POST a body", vec!["--data-binary", "0123456789"], "/post"),
        ];
        differ.extend(compare_runs(&runs, &cases, &[], |_, _, r| {
            format!(
                "curl exit {:?}, status {}, content-length {:?}, body {}",
                r.exit_code,
                r.status,
                r.header("content-length"),
                describe_body(&r.body)
            )
        }));
    }
    // The references are what nginx is configured to send.
    let file = curl(CurlHttp::Http10, &nginx.url(NGINX_SMALL_FILE), &[]);
    assert_eq!(
        file.body,
        file_bytes(NGINX_SMALL_FILE_SIZE),
        "{}",
        file.summary()
    );
    let page = curl(CurlHttp::Http10, &nginx.url(NGINX_CHUNKED_PAGE), &[]);
    assert_eq!(page.body, chunked_page().as_bytes(), "{}", page.summary());
    assert!(
        differ.is_empty(),
        "curl through switchyard to nginx differs from curl straight to nginx:\n{}",
        differ.join("\n")
    );
}

#[test]
fn switchyards_own_answers_reach_every_curl_protocol_intact() {
    // 404 (no route) and 502 (the only node refuses connections), to GET and HEAD.
    let sy = Switchyard::start(&format!(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\n\
         routes:\n  - {{host: down.interop.test, pool: down}}\n\
         pools:\n  down:\n    nodes: [{{addr: \"{}\"}}]\n",
        refusing_addr()
    ));
    let mut problems = Vec::new();
    for http in [CurlHttp::Http10, CurlHttp::Http11, CurlHttp::H2c] {
        for (host, want) in [("nothing.interop.test", 404), ("down.interop.test", 502)] {
            for head in [false, true] {
                let host_header = format!("Host: {host}");
                let mut args = vec!["-H", host_header.as_str()];
                if head {
                    args.push("--head");
                }
                let r = curl(http, &sy.url("/x"), &args);
                let body_ok = if head {
                    r.body.is_empty()
                } else {
                    r.text().starts_with("{\"error\":")
                };
                if !r.ok() || r.status != want || !body_ok {
                    problems.push(format!(
                        "  {http:?} {} to {host} (want {want}): {}, body {}",
                        if head { "HEAD" } else { "GET" },
                        r.summary(),
                        describe_body(&r.body)
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "switchyard's own answers do not reach curl intact:\n{}",
        problems.join("\n")
    );
}

/// h2load: 1000 requests on 4 connections with 8 streams each, all of them 2xx.
fn h2load_all_2xx(url: &str) -> Result<(), String> {
    let r = h2load(url, 1000, 4, 8);
    if r.succeeded == 1000 && r.status_2xx == 1000 && r.failed == 0 && r.errored == 0 {
        return Ok(());
    }
    Err(format!(
        "{} succeeded, {} failed, {} errored, {} timeout; status {} 2xx, {} 3xx, {} 4xx, {} 5xx\n{}",
        r.succeeded,
        r.failed,
        r.errored,
        r.timeout,
        r.status_2xx,
        r.status_3xx,
        r.status_4xx,
        r.status_5xx,
        r.output
    ))
}

#[test]
fn h2load_through_switchyard_to_an_http1_node_gets_all_2xx() {
    let reference = Nginx::start(NginxProtocol::H2c);
    if let Err(e) = h2load_all_2xx(&reference.url(NGINX_SMALL_FILE)) {
        panic!("h2load straight to nginx over h2c: {e}");
    }
    let nginx = Nginx::start(NginxProtocol::Http1);
    let sy = in_front_of(&nginx, "");
    if let Err(e) = h2load_all_2xx(&sy.url(NGINX_SMALL_FILE)) {
        panic!("h2load -n 1000 -c 4 -m 8 through switchyard to an HTTP/1.1 nginx: {e}");
    }
}

#[test]
fn h2load_through_switchyard_to_an_h2c_node_gets_all_2xx() {
    // Many concurrent streams from the client become concurrent streams to the node.
    let nginx = Nginx::start(NginxProtocol::H2c);
    if let Err(e) = h2load_all_2xx(&nginx.url(NGINX_SMALL_FILE)) {
        panic!("h2load straight to nginx over h2c: {e}");
    }
    let sy = in_front_of(&nginx, "    upstream_protocol: h2\n");
    if let Err(e) = h2load_all_2xx(&sy.url(NGINX_SMALL_FILE)) {
        panic!("h2load -n 1000 -c 4 -m 8 through switchyard to nginx over h2c: {e}");
    }
}
