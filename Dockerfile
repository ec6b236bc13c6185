# OmniFlow server image: docker build -t omniflow:latest .
# Build stage: the host binary with its built-in pieces (wasm32-wasip2,
# built by host/build.rs) embedded.
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY .cargo .cargo
COPY host host
COPY sdk sdk
COPY pieces pieces
COPY tests tests
COPY wit wit
COPY migrations migrations
COPY examples examples
RUN cargo build --release --locked -p omniflow --bin omniflow

# Runtime stage: the binary alone, run as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --create-home omniflow
COPY --from=build /src/target/release/omniflow /usr/local/bin/omniflow
USER omniflow
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["omniflow"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--db", "/data/omniflow.db"]
