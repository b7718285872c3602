# Multi-stage build: a Rust builder, then a slim runtime with only the binary and the
# example config, running as a non-root user.
#
#   docker build -t switchyard .
#   docker run --rm -p 8080:8080 switchyard
#
# Mount your own config at /etc/switchyard/switchyard.yaml to replace the example.

FROM rust:1-slim-bookworm AS builder
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY strategies/Cargo.toml strategies/Cargo.toml
RUN mkdir -p src strategies/src strategies/benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && touch strategies/src/lib.rs && echo 'fn main() {}' > strategies/benches/pick.rs \
    && cargo build --release --locked || true
COPY src src
COPY strategies strategies
RUN touch src/main.rs src/lib.rs strategies/src/lib.rs \
    && cargo build --release --locked --bin switchyard \
    && strip target/release/switchyard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin switchyard
COPY --from=builder /src/target/release/switchyard /usr/local/bin/switchyard
# The example config, with its listener on every interface so the published port works
# (the admin API stays on the container's loopback: HEALTHCHECK runs inside it).
COPY config.example.yaml /etc/switchyard/switchyard.yaml
RUN sed -i 's/bind: 127.0.0.1:8080/bind: 0.0.0.0:8080/' /etc/switchyard/switchyard.yaml
USER 10001:10001
# 8080: the example's HTTP listener; 9090: the admin API (the example binds it to the
# container's loopback; bind it to 0.0.0.0 in your config only behind a firewall, and set
# admin.token_env).
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9090/healthz || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["run", "-c", "/etc/switchyard/switchyard.yaml", "--log-format", "json"]
