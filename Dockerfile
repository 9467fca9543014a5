# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Symbols stripped at link time: a smaller image, and the same profile for both layers below.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols

# The dependencies in a layer of their own, built from the manifests, the wire contract and
# stub sources: an edit to the code reuses it; only a manifest, Cargo.lock or .proto change
# rebuilds it.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY gateway/Cargo.toml gateway/
COPY migrations/Cargo.toml migrations/
RUN mkdir -p src benches gateway/src migrations/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs gateway/src/lib.rs migrations/src/lib.rs \
    && for bench in $(sed -n '/^\[\[bench\]\]/{n;s/^name = "\(.*\)"/\1/p}' Cargo.toml); do \
         echo 'fn main() {}' > "benches/$bench.rs"; \
       done \
    && cargo build --release --locked --bin molecule \
    && rm -rf src benches gateway/src migrations/src

COPY . .
# COPY keeps the context's timestamps, which can be older than the stub build: make the real
# sources newer so cargo rebuilds the workspace crates (and only them).
RUN touch src/main.rs src/lib.rs gateway/src/lib.rs migrations/src/lib.rs \
    && cargo build --release --locked --bin molecule

FROM debian:bookworm-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="molecule" \
      org.opencontainers.image.description="Molecule: the control plane for AI-agent workspaces" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --no-log-init --shell /usr/sbin/nologin \
        --home-dir /var/lib/molecule --create-home molecule \
    && install -d -o molecule -g molecule -m 0700 /var/lib/molecule/data
COPY --from=build /src/target/release/molecule /usr/local/bin/molecule
COPY templates /usr/share/molecule/templates
USER molecule
WORKDIR /var/lib/molecule
ENV MOLECULE_LISTEN=0.0.0.0:8080 \
    MOLECULE_DATA_DIR=/var/lib/molecule/data \
    MOLECULE_TEMPLATES_DIR=/usr/share/molecule/templates \
    MOLECULE_LOG_FORMAT=json
# The embedded database, the generated admin token and the secrets key live here: without a
# volume they would vanish with the container.
VOLUME ["/var/lib/molecule/data"]
EXPOSE 8080
# Ready, not merely alive: the datastore (and Redis, when configured) answer and every
# migration is applied.
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 \
    CMD ["molecule", "health", "--url", "http://127.0.0.1:8080"]
ENTRYPOINT ["molecule"]
CMD ["serve"]
