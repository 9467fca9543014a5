# Multi-stage build: compile with the Rust toolchain, run on a slim Debian as a non-root user.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin molecule

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/molecule --create-home molecule
COPY --from=build /src/target/release/molecule /usr/local/bin/molecule
USER molecule
WORKDIR /var/lib/molecule
ENV MOLECULE_LISTEN=0.0.0.0:8080 \
    MOLECULE_DATA_DIR=/var/lib/molecule/data
EXPOSE 8080
ENTRYPOINT ["molecule"]
CMD ["serve"]
