# sqsbeat sidecar image: build in the Rust image, run on a slim Debian as
# a non-root user, the binary as entrypoint.
#
#   docker build -t sqsbeat .
#   docker run --rm -v $PWD/schedules:/schedules sqsbeat check /schedules

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
# The one build step (scripts/check-dockerfile runs this same line in CI).
RUN cargo build --release --locked --bin sqsbeat

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/sqsbeat --create-home sqsbeat
COPY --from=build /src/target/release/sqsbeat /usr/local/bin/sqsbeat
USER 10001:10001
WORKDIR /var/lib/sqsbeat
# The SQLite default lives in the working directory; mount a volume here
# for a single replica, or set SQSBEAT_DATABASE_URL for PostgreSQL.
VOLUME ["/var/lib/sqsbeat"]
EXPOSE 9405
# No curl in the image: bash opens the socket itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9405 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q ' 200 ' <&3"]
ENTRYPOINT ["sqsbeat"]
CMD ["run", "/schedules"]
