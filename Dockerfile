# syntax=docker/dockerfile:1
#
# rdev-api container image.
#
#   docker build -t rdev-api .
#
# Builder and runtime are the same Debian release (trixie), so the binary's glibc matches.
# TLS is pure Rust (rustls + ring, webpki roots for Postgres, the service account CA for
# Kubernetes): no OpenSSL is built or installed.

############################ builder ############################
FROM rust:1.95-slim-trixie AS builder
WORKDIR /src

# 1. Dependencies only, cached until a Cargo.toml or Cargo.lock changes. Cargo needs every
#    workspace member's manifest (and a target in each) to resolve the workspace, so the
#    members get dummy sources too.
COPY Cargo.toml Cargo.lock ./
COPY tests/fake-kube/Cargo.toml tests/fake-kube/Cargo.toml
COPY bench/spawn-rate/Cargo.toml bench/spawn-rate/Cargo.toml
COPY bench/hello-axum/Cargo.toml bench/hello-axum/Cargo.toml
COPY e2e/Cargo.toml e2e/Cargo.toml
COPY cli/Cargo.toml cli/Cargo.toml
RUN mkdir -p src tests/fake-kube/src bench/spawn-rate/src bench/hello-axum/src e2e/src cli/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > tests/fake-kube/src/main.rs \
    && touch tests/fake-kube/src/lib.rs \
    && echo 'fn main() {}' > bench/spawn-rate/src/main.rs \
    && echo 'fn main() {}' > bench/hello-axum/src/main.rs \
    && touch e2e/src/lib.rs \
    && echo 'fn main() {}' > cli/src/main.rs \
    && cargo build --release --locked -p rdev-api \
    && rm -rf src target/release/rdev-api target/release/deps/rdev_api-* target/release/deps/librdev_api-* \
        target/release/.fingerprint/rdev-api-*

# 2. The service itself. build.rs embeds migrations/ into the binary.
COPY build.rs ./
COPY migrations migrations
COPY src src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p rdev-api \
    && install -D -m 0755 target/release/rdev-api /out/rdev-api

############################ runtime ############################
# debian:trixie-slim rather than gcr.io/distroless/cc-debian13:nonroot: the local executor
# (RDEV_EXECUTOR=local, the default, used by docker-compose.yml) runs every command as
# `/bin/sh -c …` inside this container, so the image needs a shell and basic tools.
# With RDEV_EXECUTOR=kubernetes (production) commands run in the project pods instead and
# a distroless runtime would do; one image for both keeps things simple.
FROM debian:trixie-slim AS runtime

ARG UID=10001
RUN groupadd --system --gid "${UID}" rdev \
    && useradd --system --uid "${UID}" --gid rdev --home-dir /var/lib/rdev --shell /usr/sbin/nologin rdev \
    && mkdir -p /var/lib/rdev/projects \
    && chown -R rdev:rdev /var/lib/rdev

COPY --from=builder /out/rdev-api /usr/local/bin/rdev-api

# The SQLite default (sqlite://rdev.db) lands in the working directory, which the rdev user
# owns; set DATABASE_URL=postgres://… for anything beyond one node.
WORKDIR /var/lib/rdev
ENV RDEV_LISTEN=0.0.0.0:8080 \
    RDEV_PROJECTS_DIR=/var/lib/rdev/projects \
    RDEV_LOG_FORMAT=json
USER 10001:10001
EXPOSE 8080

# No curl/wget in the image: bash's /dev/tcp asks GET /health. Kubernetes ignores HEALTHCHECK
# and uses the probes in deployments/k8s/base/rdev-api.yaml.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]

ENTRYPOINT ["/usr/local/bin/rdev-api"]
CMD ["serve"]
