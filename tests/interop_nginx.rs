//! nginx as the node, over HTTP/1.1 (the default upstream protocol) and over h2c
//! (`upstream_protocol: h2`), with curl as the client.
//!
//! Each scenario runs straight against nginx and again through switchyard (with an
//! HTTP/1.1 and an h2c client), and what nginx answered must be the same: status, length,
//! body, trailers, what nginx stored of an upload, and what nginx saw of the request
//! (method, Host, target). Through switchyard nginx must also see `X-Forwarded-For` and
//! `X-Forwarded-Host`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::thirdparty::{
    chunked_page, compare_runs, curl, describe_body, file_bytes, one_node_config, Case, CurlHttp,
    CurlResponse, Nginx, NginxProtocol, NGINX_CHUNKED_PAGE, NGINX_FILE, NGINX_FILE_SIZE,
};
use common::{unique_dir, Switchyard};

/// The Host every request is sent with, port included (nginx's `$host` drops the port).
const HOST: &str = "app.interop.test:8080";

/// A body the test uploads: 100 KiB of a pattern unlike nginx's files.
fn upload() -> Vec<u8> {
    (0..100 * 1024).map(|i| (i * 7 % 256) as u8).collect()
}

/// A short, comparable description of a body: its length and a hash, or what it is.
fn body_view(body: &[u8]) -> String {
    if body == file_bytes(NGINX_FILE_SIZE).as_slice() {
        return "the 1 MiB file".into();
    }
    if body == chunked_page().as_bytes() {
        return "the chunked page".into();
    }
    describe_body(body)
}

/// What a scenario's outcome is compared by.
fn view(r: &CurlResponse, fields: &[&str]) -> String {
    let mut v = format!(
        "curl exit {:?}, status {}, body {}",
        r.exit_code,
        r.status,
        body_view(&r.body)
    );
    for f in fields {
        v.push_str(&format!(", {f}: {:?}", r.header(f)));
    }
    v
}

/// nginx's `/echo` answer as `key → value`.
fn echo_map(r: &CurlResponse) -> BTreeMap<String, String> {
    r.text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The client protocol nginx itself speaks in `protocol` mode.
fn native(protocol: NginxProtocol) -> CurlHttp {
    match protocol {
        NginxProtocol::Http1 => CurlHttp::Http11,
        NginxProtocol::H2c => CurlHttp::H2c,
    }
}

/// The pool lines for a node speaking `protocol`.
fn pool(protocol: NginxProtocol) -> &'static str {
    match protocol {
        NginxProtocol::Http1 => "    timeouts: {connect: 2s, request: 20s}\n",
        NginxProtocol::H2c => {
            "    upstream_protocol: h2\n    timeouts: {connect: 2s, request: 20s}\n"
        }
    }
}

/// Every scenario straight against nginx, then through switchyard with an HTTP/1.1 and an
/// h2c client; panics listing every scenario whose outcomes differ.
fn requests_agree(protocol: NginxProtocol) {
    let nginx = Nginx::start(protocol);
    let sy = Switchyard::start(&one_node_config(nginx.addr, pool(protocol)));
    let dir = unique_dir("nginx-bodies");
    let upload_file = dir.join("upload");
    std::fs::write(&upload_file, upload()).expect("write the upload");
    let file_arg = format!("@{}", upload_file.display());
    let file_arg = file_arg.as_str();
    let host = format!("Host: {HOST}");
    let host = host.as_str();

    let direct_base = format!("http://{}", nginx.addr);
    let through_base = format!("http://{}", sy.http());
    let runs = [
        ("direct", native(protocol), direct_base.as_str()),
        ("through/http1.1", CurlHttp::Http11, through_base.as_str()),
        ("through/h2c", CurlHttp::H2c, through_base.as_str()),
    ];

    // `how`: the header fields compared besides status and body.
    let case = |name, args, path, how: &'static [&'static str]| Case {
        name,
        args,
        path,
        how,
    };
    let cases: Vec<Case<&[&str]>> = vec![
        case("GET a file", vec![], NGINX_FILE, &["content-length"]),
        case(
            "HEAD a file",
            vec!["--head"],
            NGINX_FILE,
            &["content-length"],
        ),
        case(
            "GET a missing file",
            vec![],
            "/files/missing.bin",
            &["content-type"],
        ),
        case(
            "POST a body with a length",
            vec!["--data-binary", file_arg],
            "/post",
            &[],
        ),
        case(
            // HTTP/1.1 sends it chunked; curl sends an HTTP/2 body with no length.
            "POST a body without a length",
            vec![
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                file_arg,
            ],
            "/post",
            &[],
        ),
        case(
            "GET a chunked page",
            vec![],
            NGINX_CHUNKED_PAGE,
            &["content-type"],
        ),
    ];
    let mut differ = compare_runs(&runs, &cases, &["-H", host], |fields, _, r| view(r, fields));

    // What nginx saw of the request line and Host, and the forwarding headers.
    let echo_path = "/echo?q=1&name=a%20b&slash=%2F";
    let direct = curl(
        native(protocol),
        &format!("{direct_base}{echo_path}"),
        &["-H", host],
    );
    let want = echo_map(&direct);
    for (run, http, base) in &runs[1..] {
        let r = curl(*http, &format!("{base}{echo_path}"), &["-H", host]);
        let mut seen = echo_map(&r);
        let xff = seen.insert("xff".into(), String::new());
        let xfh = seen.insert("xfh".into(), String::new());
        if r.status != direct.status || seen != want {
            differ.push(format!(
                "  what nginx saw ({run}):\n    direct:  {} {want:?}\n    through: {} {seen:?}",
                direct.summary(),
                r.summary()
            ));
        }
        if xff.as_deref() != Some("127.0.0.1") || xfh.as_deref() != Some(HOST) {
            differ.push(format!(
                "  forwarding headers ({run}): X-Forwarded-For {xff:?} (want \"127.0.0.1\"), \
                 X-Forwarded-Host {xfh:?} (want {HOST:?})"
            ));
        }
    }

    // An upload nginx stores (WebDAV PUT): the stored file must be the bytes sent.
    for (run, http, base) in &runs {
        let path = format!("/dav/{}.bin", run.replace('/', "-"));
        let r = curl(
            *http,
            &format!("{base}{path}"),
            &["-H", host, "-T", upload_file.to_str().expect("utf-8 path")],
        );
        let stored = nginx.stored(&path);
        if r.status != 201 || stored.as_deref() != Some(upload().as_slice()) {
            differ.push(format!(
                "  PUT a 100 KiB file ({run}): {}, nginx stored {}",
                r.summary(),
                stored.as_deref().map(body_view).unwrap_or("nothing".into())
            ));
        }
    }

    assert!(
        differ.is_empty(),
        "nginx as {protocol:?} node: switchyard's answers differ from nginx's own:\n{}",
        differ.join("\n")
    );
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// The chunked page's trailer reaches the client straight from nginx and through
/// switchyard, for HTTP/1.1 (chunked) and h2c clients.
fn trailers_arrive(protocol: NginxProtocol) {
    let nginx = Nginx::start(protocol);
    let sy = Switchyard::start(&one_node_config(nginx.addr, pool(protocol)));
    let want = vec![("x-trailer-check".to_string(), "nginx-GET".to_string())];
    let direct = curl(native(protocol), &nginx.url(NGINX_CHUNKED_PAGE), &[]);
    assert!(
        direct.ok() && direct.trailers == want && direct.body == chunked_page().as_bytes(),
        "straight from nginx: want the page and trailers {want:?}, got {} {:?}",
        direct.summary(),
        direct.trailers
    );
    let mut differ = Vec::new();
    for http in [CurlHttp::Http11, CurlHttp::H2c] {
        let r = curl(http, &sy.url(NGINX_CHUNKED_PAGE), &["-H", "TE: trailers"]);
        if !r.ok() || r.trailers != want || r.body != chunked_page().as_bytes() {
            differ.push(format!(
                "  {http:?} client: {}, trailers {:?}",
                r.summary(),
                r.trailers
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "nginx as {protocol:?} node: its response trailers {want:?} do not reach clients \
         through switchyard:\n{}",
        differ.join("\n")
    );
}

#[test]
fn nginx_http1_node_answers_the_same_through_switchyard() {
    requests_agree(NginxProtocol::Http1);
}

#[test]
fn nginx_h2c_node_answers_the_same_through_switchyard() {
    requests_agree(NginxProtocol::H2c);
}

#[test]
fn nginx_http1_node_response_trailers_reach_clients() {
    trailers_arrive(NginxProtocol::Http1);
}

#[test]
fn nginx_h2c_node_response_trailers_reach_clients() {
    trailers_arrive(NginxProtocol::H2c);
}
