# Switchyard's container image: a Rust builder stage, then a slim Debian runtime holding
# only the binary, run as a non-root user.
#
#   docker build -t switchyard .
#   docker run --rm -p 8080:8080 -p 9090:9090 switchyard      # the built-in demo
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/switchyard.yaml:/etc/switchyard/switchyard.yaml:ro" \
#     switchyard run -c /etc/switchyard/switchyard.yaml --log-format json
#
# The builder copies the whole workspace (`COPY . .`), minus what .dockerignore leaves out
# (build output, VCS data), so that every file Cargo.toml refers to — benches, other
# workspace members, files pulled in by include_str! — is there: copying chosen
# directories one by one is how a newly declared bench once broke this build. `.ci/image-context`
# assembles the same context without a Docker daemon and runs this cargo command on it in CI.
#
# Dependencies are cached with BuildKit cache mounts (the default builder since Docker 23)
# instead of a separate "dependencies only" stage: that stage needs a fake source tree
# mirroring every target of every workspace member, which has to be kept in step by hand and
# silently rots. With the cache mounts, the registry and target directory survive between
# builds on the same builder, so a source change recompiles only the workspace's own crates.

FROM rust:1-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin switchyard \
    && cp target/release/switchyard /usr/local/bin/switchyard \
    && strip /usr/local/bin/switchyard

FROM debian:bookworm-slim
# ca-certificates: the system roots for rediss:// registry connections (upstream TLS uses
# the roots built into the binary). curl: the HEALTHCHECK below. There is no `kill` binary
# (procps) on purpose: to send a signal, use `docker kill --signal=HUP CONTAINER`, or
# `sh -c 'kill -HUP 1'` inside the container (the shell's built-in kill).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin switchyard \
    && mkdir -p /etc/switchyard
COPY --from=builder /usr/local/bin/switchyard /usr/local/bin/switchyard
# A numeric user, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001
# 8080: the HTTP listener; 9090: the admin API (health, metrics, pools). The demo binds both
# on every interface of the container; with your own config, bind the admin API to
# 0.0.0.0 only behind a firewall or a NetworkPolicy, and set admin.token_env.
EXPOSE 8080 9090
# Expects the admin API on port 9090 of the container (the demo's, and the Kubernetes
# manifests'); with another admin port, override it with `docker run --health-cmd`.
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard"]
# Out of the box: three built-in echo backends behind the balancer, reachable from the host
# (`curl http://127.0.0.1:8080/hello`). Give `run -c FILE` to serve your own config.
CMD ["demo", "--bind", "0.0.0.0:8080", "--admin-bind", "0.0.0.0:9090"]
