//! What the container image promises and can be checked without a Docker engine: the
//! Dockerfile's default command (`ENTRYPOINT` + `CMD`) is a command line the binary accepts
//! and serves the demo with, its HEALTHCHECK probes the admin port that command binds, and
//! `EXPOSE` publishes both ports. That the build stage compiles is `.ci/image-context`'s job.
//!
//! The command is run as written except for its binds: `0.0.0.0:PORT` becomes
//! `127.0.0.1:0`, since a test binds neither every interface nor a fixed port.

mod common;

use std::collections::HashSet;

use common::client::get;
use common::Switchyard;

fn dockerfile() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The arguments of the exec-form (`["a", "b"]`) instruction `keyword` of the final stage.
fn exec_form(text: &str, keyword: &str) -> Vec<String> {
    let line = text
        .lines()
        .rfind(|l| l.starts_with(&format!("{keyword} ")))
        .unwrap_or_else(|| panic!("the Dockerfile has no {keyword} instruction"));
    serde_json::from_str(&line[keyword.len()..])
        .unwrap_or_else(|e| panic!("{keyword} is not in exec form (a JSON array): {e}: {line}"))
}

/// The instruction `keyword` with its continuation lines joined.
fn instruction(text: &str, keyword: &str) -> String {
    let start = text
        .find(&format!("\n{keyword} "))
        .unwrap_or_else(|| panic!("the Dockerfile has no {keyword} instruction"));
    let mut out = String::new();
    for line in text[start + 1..].lines() {
        match line.trim_end().strip_suffix('\\') {
            Some(more) => out.push_str(more),
            None => {
                out.push_str(line);
                break;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_command_serves_the_demo_on_the_exposed_and_probed_ports() {
    let text = dockerfile();
    assert_eq!(
        exec_form(&text, "ENTRYPOINT"),
        ["/usr/local/bin/switchyard"],
        "the image's entrypoint is the binary"
    );
    let cmd = exec_form(&text, "CMD");
    let mut public_ports = Vec::new();
    let args: Vec<String> = cmd
        .iter()
        .map(|a| match a.strip_prefix("0.0.0.0:") {
            Some(port) => {
                public_ports.push(port.to_string());
                "127.0.0.1:0".to_string()
            }
            None => a.clone(),
        })
        .collect();
    let flag_port = |flag: &str| -> String {
        let i = cmd
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("CMD {cmd:?} has no {flag}"));
        cmd[i + 1]
            .strip_prefix("0.0.0.0:")
            .unwrap_or_else(|| {
                panic!(
                    "CMD binds {flag} to {}, unreachable from outside",
                    cmd[i + 1]
                )
            })
            .to_string()
    };
    let (http_port, admin_port) = (flag_port("--bind"), flag_port("--admin-bind"));

    let expose_line = instruction(&text, "EXPOSE");
    let expose: HashSet<&str> = expose_line.split_whitespace().skip(1).collect();
    for port in &public_ports {
        assert!(
            expose.contains(port.as_str()),
            "CMD binds port {port} but EXPOSE lists only {expose:?}"
        );
    }
    let health = instruction(&text, "HEALTHCHECK");
    assert!(
        health.contains(&format!("http://127.0.0.1:{admin_port}/healthz")),
        "HEALTHCHECK must probe the admin port the default command binds ({admin_port}): {health}"
    );

    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let sy = Switchyard::start_args(&argv);
    let mut names = HashSet::new();
    for i in 0..3 {
        let r = get(sy.http(), &format!("/hello/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        names.insert(r.text().split(':').next().unwrap_or_default().to_string());
    }
    assert_eq!(
        names,
        HashSet::from(["backend-1", "backend-2", "backend-3"].map(String::from)),
        "three requests reach the three demo backends (the default command {cmd:?}, port {http_port})"
    );
    let health = get(sy.admin_addr(), "/healthz").await;
    assert_eq!(health.status, 200, "/healthz: {}", health.text());
}
