# Sluice as a container image: one `sluice` binary on a slim Debian, running as a non-root user.
#   docker build -t sluice .
#   docker run -p 8080:8080 sluice                      # the embedded defaults (config/sluice.yaml)
# docker-compose.yml runs the scaled-out shape (Kafka, collectors, routers) from this image.

# --- build ---------------------------------------------------------------------------------------
# rust-version in Cargo.toml is 1.94; the vendored librdkafka needs a C toolchain, make, perl,
# pkg-config, and zlib and OpenSSL headers (TLS and SASL SCRAM to the brokers).
FROM rust:1.94-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends zlib1g-dev libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build between image builds (BuildKit); the binary is
# copied out of the cached target directory, which does not survive into the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sluice \
 && install -m 0755 target/release/sluice /usr/local/bin/sluice

# --- run -----------------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/sluice --shell /usr/sbin/nologin sluice \
 && mkdir -p /var/lib/sluice \
 && chown sluice:sluice /var/lib/sluice
COPY --from=build /usr/local/bin/sluice /usr/local/bin/sluice
# Config files name their scripts relative to the working directory (transforms/scrub_pii.rhai).
WORKDIR /usr/share/sluice
COPY config ./config
COPY transforms ./transforms
USER sluice
# Inside a container the listeners bind every interface; the data (log, dead letters, files
# output) goes to a volume.
ENV SLUICE_DATA_DIR=/var/lib/sluice \
    SLUICE_LISTEN=0.0.0.0:8080 \
    SLUICE_ADMIN_LISTEN=0.0.0.0:9180
VOLUME ["/var/lib/sluice"]
# 8080: the collector (ingest, faces clients); 9180: the admin listener (/metrics, /health,
# /ready, /dashboard), for operators and Prometheus only.
EXPOSE 8080 9180
ENTRYPOINT ["sluice"]
CMD ["run", "--config", "config/sluice.yaml"]
