//! `switchyard demo`: three tiny echo backends and the balancer in one process, for a first
//! try without writing a config or starting anything else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::config;
use crate::control::supervisor::Supervisor;

/// Start the demo backends and the balancer, print how to try it, serve until a signal.
pub async fn run(bind: &str, admin_bind: &str) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let addr = spawn_echo_backend(format!("backend-{i}")).await?;
        nodes.push(addr);
    }
    let yaml = demo_config(bind, admin_bind, &nodes);
    let loaded = config::load_text(Path::new("<demo>"), &yaml)
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let sup = Supervisor::start(loaded, None).await?;
    if let Some((_, addr)) = sup.bound.listeners.first() {
        let admin = sup.bound.admin.map(|a| a.to_string()).unwrap_or_default();
        eprintln!();
        eprintln!("  Switchyard demo: 3 echo backends behind a round-robin pool.");
        eprintln!("  Try:      for i in 1 2 3 4; do curl -s http://{addr}/hello; done");
        eprintln!("  Pools:    curl -s http://{admin}/api/v1/pools");
        eprintln!("  Metrics:  curl -s http://{admin}/metrics | grep switchyard_requests_total");
        eprintln!("  Stop:     Ctrl-C");
        eprintln!();
    }
    sup.run().await
}

fn demo_config(bind: &str, admin_bind: &str, nodes: &[SocketAddr]) -> String {
    let mut yaml = format!(
        "listeners:\n  - name: http\n    bind: \"{bind}\"\nadmin:\n  bind: \"{admin_bind}\"\nroutes:\n  - pool: demo\npools:\n  demo:\n    strategy: round_robin\n    nodes:\n"
    );
    for n in nodes {
        yaml.push_str(&format!("      - addr: \"{n}\"\n"));
    }
    yaml.push_str("shutdown_timeout: 5s\n");
    yaml
}

/// An HTTP/1.1 + h2c server on an ephemeral loopback port that answers every request
/// with its name, the method and the path.
pub async fn spawn_echo_backend(name: String) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a demo backend on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let body = format!("{name}: {} {}\n", req.method(), req.uri().path());
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}
