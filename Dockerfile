# syntax=docker/dockerfile:1
# sluicegate: a multi-stage build, release binary on a slim Debian base,
# running as a non-root user.
#
#   docker build -t sluicegate .
#   docker run -d --name sluicegate -p 8080:8080 -p 127.0.0.1:9901:9901 \
#       -e SLUICEGATE_ADMIN_TOKEN="$(openssl rand -hex 32)" \
#       -v "$PWD/config/compose.toml:/etc/sluicegate/sluicegate.toml:ro" sluicegate
#
# The HEALTHCHECK asks /readyz on the admin listener at 127.0.0.1:9901 (the
# default admin address; 0.0.0.0:9901 answers there too), which needs no token.
# docker-compose.yml runs it with two demo backends and Prometheus; the full
# `docker run` walk-through is in docs/OPERATIONS.md#containers.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the build between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluicegate \
    && install -m 0755 target/release/sluicegate /usr/local/bin/sluicegate

FROM debian:bookworm-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="sluicegate" \
      org.opencontainers.image.description="Reverse proxy that splits live HTTP traffic between versions of a service (blue/green, canary) by exact weights" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.documentation="docs/OPERATIONS.md#containers" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
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
# `sluicegate probe` is a GET that exits 0 on 2xx: no curl in the image.
# /readyz turns 503 once shutdown starts, so a draining container is unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["sluicegate", "probe", "http://127.0.0.1:9901/readyz"]
ENTRYPOINT ["sluicegate"]
CMD ["run", "-c", "/etc/sluicegate/sluicegate.toml"]
