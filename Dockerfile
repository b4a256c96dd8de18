# fargo's container images: one target per sidecar of the assembly.
#
#   docker build --target logging -t fargo/fargo-logging:dev .
#   (targets: logging, thumbnail, coin-value, auth-proxy; `docker compose build` builds all)
#
# Where the binaries come from (docker/README.md):
# - compiled here, in the Rust image: the default, what anyone with a registry does;
# - built on the host, when the engine cannot pull a Rust image (this project's CI):
#   docker/build-images.sh --prebuilt stages them under target/docker-prebuilt and passes
#   --build-arg PREBUILT=target/docker-prebuilt --build-arg RUST_IMAGE=debian:bookworm-slim.
#
# Every runtime stage is FROM scratch plus the tree docker/rootfs.sh stages: the binary,
# exactly the shared libraries it links, CA certificates, and the non-root user 10001.
# No shell and no package manager: the health check is the binary's own subcommand.

ARG RUST_IMAGE=rust:1.95-slim-bookworm

# ---- plan: the workspace's manifests with stub sources, for the dependency layer
FROM ${RUST_IMAGE} AS plan
COPY . /src
RUN sh /src/docker/skeleton.sh /src /skeleton

# ---- build: compile the four sidecars and stage their root file systems in /rootfs
FROM ${RUST_IMAGE} AS build
ARG PREBUILT=
ARG PROFILE=release
ENV CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0
# FFmpeg headers and clang (for ffmpeg-sys's bindgen); not needed for prebuilt binaries.
RUN if [ -z "$PREBUILT" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends pkg-config clang libclang-dev binutils \
            libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libswresample-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
# Dependency layer: rebuilt only when a manifest or Cargo.lock changes.
COPY --from=plan /skeleton/ ./
RUN if [ -z "$PREBUILT" ]; then \
        cargo build --locked --profile "$PROFILE" \
            -p thumbnail -p coin-value -p logging -p auth-proxy; \
    fi
COPY . .
# The stubs compiled above are newer than the real sources; touching makes cargo see them.
# Prebuilt: `build-images.sh --only X` stages one tree; the others stay empty so the legacy
# builder, which runs every stage before the target, can still get through them.
RUN if [ -n "$PREBUILT" ]; then \
        mkdir -p /rootfs/thumbnail /rootfs/coin-value /rootfs/logging /rootfs/auth-proxy \
        && cp -a "$PREBUILT/." /rootfs/; \
    else \
        find crates -name '*.rs' -exec touch {} + \
        && cargo build --locked --profile "$PROFILE" \
            -p thumbnail -p coin-value -p logging -p auth-proxy \
        && sh docker/rootfs.sh "target/$PROFILE" /rootfs thumbnail coin-value logging auth-proxy; \
    fi

# ---- runtime images. The health checks repeat the task definition's `healthCheck`.
FROM scratch AS logging
COPY --from=build /rootfs/logging/ /
USER 10001:10001
EXPOSE 4317
ENTRYPOINT ["/usr/local/bin/logging"]
CMD ["serve"]
HEALTHCHECK --interval=5s --timeout=3s --retries=3 --start-period=10s CMD ["/usr/local/bin/logging", "healthcheck"]

FROM scratch AS thumbnail
COPY --from=build /rootfs/thumbnail/ /
USER 10001:10001
EXPOSE 50061
ENTRYPOINT ["/usr/local/bin/thumbnail"]
CMD ["serve"]
HEALTHCHECK --interval=5s --timeout=3s --retries=3 --start-period=10s CMD ["/usr/local/bin/thumbnail", "healthcheck"]

FROM scratch AS coin-value
COPY --from=build /rootfs/coin-value/ /
USER 10001:10001
EXPOSE 50062
ENTRYPOINT ["/usr/local/bin/coin-value"]
CMD ["serve"]
HEALTHCHECK --interval=5s --timeout=3s --retries=3 --start-period=10s CMD ["/usr/local/bin/coin-value", "healthcheck"]

FROM scratch AS auth-proxy
COPY --from=build /rootfs/auth-proxy/ /
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/auth-proxy"]
CMD ["serve"]
HEALTHCHECK --interval=5s --timeout=3s --retries=3 --start-period=10s CMD ["/usr/local/bin/auth-proxy", "healthcheck"]
