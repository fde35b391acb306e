# syntax=docker/dockerfile:1
# The tollgate image, as docker-compose.yml runs it: `tollgate` (the rate limit service,
# `tollgate serve`, and its operator tools) and the demo app (server/examples/demo.rs, with
# the service's routes mounted beside its own), both of the tollgate-server package.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and compiled dependencies between builds; the
# binary is copied out of the cached target directory, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tollgate-server --bin tollgate --example demo \
    && cp target/release/tollgate target/release/examples/demo /usr/local/bin/

FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid tollgate --no-create-home --shell /usr/sbin/nologin tollgate
COPY --from=builder /usr/local/bin/tollgate /usr/local/bin/tollgate
COPY --from=builder /usr/local/bin/demo /usr/local/bin/demo
# The shipped rules, used unless a rules directory is mounted (docker-compose.yml does).
COPY rate_limits.json /app/rate_limits.json
WORKDIR /app
ENV HOST=0.0.0.0 \
    PORT=8000 \
    RATE_LIMIT_RULES_PATH=/app/rate_limits.json
USER tollgate
EXPOSE 8000
# The image has no curl: `tollgate healthcheck` asks GET /health on 127.0.0.1:$PORT, which
# the demo and `tollgate serve` both answer.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["tollgate", "healthcheck"]
CMD ["demo"]
