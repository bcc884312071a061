# syntax=docker/dockerfile:1
# sluicegate: a multi-stage build, release binary on a slim Debian base,
# running as a non-root user.
#
#   docker build -t sluicegate .
#   docker run --rm -p 8080:8080 -v "$PWD/config:/etc/sluicegate:ro" sluicegate \
#       run -c /etc/sluicegate/blue-green.toml
#
# docker-compose.yml runs it with two demo backends and Prometheus.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluicegate \
    && install -m 0755 target/release/sluicegate /usr/local/bin/sluicegate

FROM debian:bookworm-slim
# ca-certificates: upstream TLS verifies against the system roots.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/sluicegate \
        --create-home --shell /usr/sbin/nologin sluicegate
COPY --from=builder /usr/local/bin/sluicegate /usr/local/bin/sluicegate
USER sluicegate
# The generated admin token and a relative state file land here.
WORKDIR /var/lib/sluicegate
# 8080: data plane; 9901: admin API and /metrics (off loopback it needs a token).
EXPOSE 8080 9901
ENTRYPOINT ["sluicegate"]
CMD ["run", "-c", "/etc/sluicegate/sluicegate.toml"]
