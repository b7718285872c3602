//! gRPC through switchyard against grpcio (Python, C-core), the implementation most gRPC
//! users run, as both the node and the client.
//!
//! `tests/interop/grpc_client.py` runs every scenario (unary, empty, server/client/bidi
//! streaming, an error with details and trailing metadata, 16 MiB both ways, a deadline,
//! the health service) and prints one JSON object of results. A run straight against the
//! grpcio server and a run through switchyard (a pool with `upstream_protocol: h2`,
//! clients over h2c and over TLS) must print the same object. The active gRPC health check
//! (`health_check.protocol: grpc`) is checked against the server's health service.

mod common;

use std::net::SocketAddr;

use serde_json::{json, Value};

use common::certs::{private_ca, signed_by, write_pair};
use common::client::get;
use common::thirdparty::{one_node_config, GrpcClient, GrpcServer};
use common::{refusing_addr, unique_dir, wait_until, Switchyard, WAIT};

/// A pool that speaks HTTP/2 to the grpcio server (gRPC needs HTTP/2 end to end).
const H2_POOL: &str = "    upstream_protocol: h2\n    timeouts: {connect: 2s, request: 20s}\n";

/// Every scenario of `direct` must be equal in `through`; the message lists each one that
/// is not, with both results.
fn assert_same(direct: &Value, through: &Value, how: &str) {
    let scenarios = direct
        .as_object()
        .expect("the direct run printed an object");
    let differ: Vec<String> = scenarios
        .iter()
        .filter(|(name, want)| through.get(name.as_str()) != Some(*want))
        .map(|(name, want)| {
            format!(
                "  {name}:\n    direct:  {want}\n    through: {}",
                through.get(name.as_str()).unwrap_or(&Value::Null)
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{how}: {} of {} gRPC scenarios differ from the direct run against grpcio:\n{}",
        differ.len(),
        scenarios.len(),
        differ.join("\n")
    );
}

#[test]
fn grpcio_scenarios_run_directly_give_the_expected_results() {
    // The harness itself: against grpcio with no switchyard in between, every scenario
    // gives what the server and client scripts are written to give.
    let server = GrpcServer::start();
    let got = GrpcClient::plaintext(server.addr).scenarios();
    let expected: &[(&str, Value)] = &[
        ("/unary/code", json!("OK")),
        ("/unary/len", json!(14)),
        ("/unary/initial", json!({"x-interop-initial": "1"})),
        (
            "/unary/trailing",
            json!({"x-interop-tag": "hello-interop", "x-interop-bin-bin": "00ff62696e617279"}),
        ),
        ("/unary_empty/code", json!("OK")),
        ("/unary_empty/len", json!(0)),
        ("/server_stream/code", json!("OK")),
        ("/server_stream/count", json!(100)),
        ("/server_stream/bytes", json!(100_000)),
        ("/server_stream_paced/count", json!(10)),
        ("/client_stream/code", json!("OK")),
        ("/client_stream/answer/count", json!(100)),
        ("/client_stream/matches_sent", json!(true)),
        ("/bidi/code", json!("OK")),
        ("/bidi/count", json!(50)),
        ("/bidi/echoed", json!(true)),
        ("/error/code", json!("INVALID_ARGUMENT")),
        (
            "/error/details",
            json!("the argument was refused: ünïcode, 100% sure"),
        ),
        (
            "/error/trailing",
            json!({"x-interop-reason": "bad-argument", "x-interop-detail-bin": "0001ff"}),
        ),
        ("/big_16mib/code", json!("OK")),
        ("/big_16mib/len", json!(16 * 1024 * 1024)),
        ("/deadline/code", json!("DEADLINE_EXCEEDED")),
        ("/health/(server)", json!("SERVING")),
        ("/health/interop.Up", json!("SERVING")),
        ("/health/interop.Down", json!("NOT_SERVING")),
        ("/health/interop.Missing", json!("NOT_FOUND")),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(pointer, want)| got.pointer(pointer) != Some(want))
        .map(|(pointer, want)| format!("  {pointer}: want {want}, got {:?}", got.pointer(pointer)))
        .collect();
    assert!(
        wrong.is_empty(),
        "the direct run against grpcio is not what the scripts promise:\n{}\nwhole result: {got:#}",
        wrong.join("\n")
    );
}

#[test]
fn grpc_over_h2c_through_switchyard_matches_the_direct_run() {
    let server = GrpcServer::start();
    let sy = Switchyard::start(&one_node_config(server.addr, H2_POOL));
    let direct = GrpcClient::plaintext(server.addr).scenarios();
    let through = GrpcClient::plaintext(sy.http()).scenarios();
    assert_same(&direct, &through, "h2c client → switchyard → h2c grpcio");
}

#[test]
fn grpc_over_tls_through_switchyard_matches_the_direct_run() {
    let server = GrpcServer::start();
    let dir = unique_dir("grpc-tls");
    let ca = private_ca();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).expect("write the CA");
    let (cert, key) = write_pair(&dir, "site", &signed_by(&ca, &["grpc.interop.test"]));
    let sy = Switchyard::start(&format!(
        "listeners:\n  - name: tls\n    bind: 127.0.0.1:0\n    tls:\n      certificates:\n\
         \x20       - cert: \"{}\"\n          key: \"{}\"\nadmin:\n  bind: 127.0.0.1:0\n\
         routes:\n  - pool: node\npools:\n  node:\n    nodes: [{{addr: \"{}\"}}]\n{H2_POOL}",
        cert.display(),
        key.display(),
        server.addr
    ));
    let direct = GrpcClient::plaintext(server.addr).scenarios();
    let through = GrpcClient::tls(sy.addr("tls"), &ca_file, "grpc.interop.test").scenarios();
    assert_same(
        &direct,
        &through,
        "TLS (ALPN h2) client → switchyard → h2c grpcio",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A pool with a gRPC health check of `service` (`None`: the setting left out, so the
/// whole server, `""`), probing every 500 ms and deciding on one result.
fn grpc_checked_pool(name: &str, node: SocketAddr, service: Option<&str>) -> String {
    let service = service
        .map(|s| format!(", grpc_service: \"{s}\""))
        .unwrap_or_default();
    format!(
        "  {name}:\n    upstream_protocol: h2\n    nodes: [{{addr: \"{node}\"}}]\n\
         \x20   timeouts: {{connect: 2s, request: 20s}}\n\
         \x20   health_check: {{protocol: grpc{service}, interval: 500ms, timeout: 500ms, \
         healthy_threshold: 1, unhealthy_threshold: 1}}\n"
    )
}

/// `health` of the node of `pool` in `GET /api/v1/pools`.
async fn node_health(admin: SocketAddr, pool: &str) -> String {
    let pools = get(admin, "/api/v1/pools").await.json();
    pools["pools"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == pool))
        .and_then(|p| p["nodes"][0]["health"].as_str())
        .unwrap_or("(missing)")
        .to_string()
}

async fn wait_health(sy: &Switchyard, pool: &str, want: &str) {
    let admin = sy.admin_addr();
    let what = format!("pool `{pool}`'s node to show health: {want} in /api/v1/pools");
    wait_until(&what, WAIT, || async move {
        node_health(admin, pool).await == want
    })
    .await;
}

/// How many `Echo` calls the grpcio server has answered.
fn echo_calls(server: &GrpcServer) -> u64 {
    GrpcClient::plaintext(server.addr).run(&["stats"])["Echo"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_health_check_follows_the_health_service() {
    let server = GrpcServer::start();
    let refusing = refusing_addr();
    let mut yaml = String::from(
        "listeners:\n  - name: http\n    bind: 127.0.0.1:0\nadmin:\n  bind: 127.0.0.1:0\n\
         routes:\n  - {host: up.interop.test, pool: up}\n  - {host: down.interop.test, pool: down}\n\
         \x20 - pool: whole\npools:\n",
    );
    yaml.push_str(&grpc_checked_pool("up", server.addr, Some("interop.Up")));
    yaml.push_str(&grpc_checked_pool(
        "down",
        server.addr,
        Some("interop.Down"),
    ));
    yaml.push_str(&grpc_checked_pool("whole", server.addr, None));
    yaml.push_str(&grpc_checked_pool(
        "missing",
        server.addr,
        Some("interop.Missing"),
    ));
    yaml.push_str(&grpc_checked_pool("refused", refusing, Some("")));
    let sy = Switchyard::start(&yaml);

    // SERVING is up; NOT_SERVING, an unknown service (NOT_FOUND) and no server are down.
    wait_health(&sy, "up", "up").await;
    wait_health(&sy, "whole", "up").await;
    wait_health(&sy, "down", "down").await;
    wait_health(&sy, "missing", "down").await;
    wait_health(&sy, "refused", "down").await;

    // A pool whose only node is down sends it nothing: the balancer answers itself.
    let before = echo_calls(&server);
    let down = GrpcClient::plaintext(sy.http())
        .authority("down.interop.test")
        .run(&["echo"]);
    assert_eq!(
        down["code"], "UNAVAILABLE",
        "a call to a pool with no healthy node: {down}"
    );
    assert_eq!(
        echo_calls(&server),
        before,
        "the call to the pool whose node is down reached the node"
    );
    let up = GrpcClient::plaintext(sy.http())
        .authority("up.interop.test")
        .run(&["echo"]);
    assert_eq!(up["code"], "OK", "a call to the healthy pool: {up}");
    assert_eq!(
        echo_calls(&server),
        before + 1,
        "the healthy pool's call reached the node"
    );

    // The service turns SERVING: the node comes up and takes calls.
    GrpcClient::plaintext(server.addr).run(&["set-health", "interop.Down", "serving"]);
    wait_health(&sy, "down", "up").await;
    let now_up = GrpcClient::plaintext(sy.http())
        .authority("down.interop.test")
        .run(&["echo"]);
    assert_eq!(
        now_up["code"], "OK",
        "a call once the service is SERVING: {now_up}"
    );
}
