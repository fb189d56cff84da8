# syntax=docker/dockerfile:1.7
# The hub's container image: a release build of the `hub` binary on a distroless base (glibc, CA certificates, no
# shell), running as a non-root user with a read-only root filesystem (the chart sets readOnlyRootFilesystem).
#
#   docker build -t realtime-hub:0.1.0 .                    # with a registry: builds in the `build` stage
#   deploy/container/build.sh                               # without one (CI): the host's binary, `prebuilt` stage
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hub --bin hub \
    && install -D -m 0755 target/release/hub /out/hub

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/hub /usr/local/bin/hub
USER 10001:10001
EXPOSE 8080
ENV HUB_BIND=0.0.0.0:8080 HUB_LOG_JSON=1
ENTRYPOINT ["/usr/local/bin/hub"]
CMD ["serve"]

# Built from a root filesystem assembled on the host around its release binary (deploy/container/rootfs.sh): the
# binary, the shared libraries it links, CA certificates and a passwd entry. For machines with no base-image
# registry; the result runs the same way as `runtime`.
FROM scratch AS prebuilt
COPY target/container-rootfs/ /
USER 10001:10001
EXPOSE 8080
ENV HUB_BIND=0.0.0.0:8080 HUB_LOG_JSON=1
ENTRYPOINT ["/usr/local/bin/hub"]
CMD ["serve"]
