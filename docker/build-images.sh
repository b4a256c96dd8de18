#!/usr/bin/env bash
# Builds the four sidecar images with the Dockerfile and prints their sizes.
#
#   docker/build-images.sh              compile inside the Dockerfile's Rust image (needs
#                                       rust:1.95-slim-bookworm: pulled, or made here by
#                                       docker/base-images.sh --rust)
#   docker/build-images.sh --prebuilt   compile on this host (cargo build --release), stage
#                                       the binaries and their libraries with
#                                       docker/rootfs.sh, and let the Dockerfile copy them
#                                       (PREBUILT mode); needs only debian:bookworm-slim,
#                                       made by docker/base-images.sh when it is missing
#
# Options: --profile release|dev (prebuilt: which cargo profile; default release),
#          --no-cargo (prebuilt: use the binaries already in target/), --only NAME.
# Tags: ${IMAGE_REPO:-fargo}/fargo-NAME:${IMAGE_TAG:-dev}, the names docker-compose.yml uses.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVICES=(logging thumbnail coin-value auth-proxy)
repo=${IMAGE_REPO:-fargo}
tag=${IMAGE_TAG:-dev}
prebuilt=0
profile=release
cargo=1
only=()
while [ $# -gt 0 ]; do
    case "$1" in
    --prebuilt) prebuilt=1; shift ;;
    --profile) profile=$2; shift 2 ;;
    --no-cargo) cargo=0; shift ;;
    --only) only+=("$2"); shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "build-images.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ ${#only[@]} -gt 0 ] && SERVICES=("${only[@]}")

if ! docker info >/dev/null 2>&1; then
    echo "build-images.sh: the Docker engine is unreachable (docker info failed)" >&2
    exit 1
fi

build_args=()
if [ "$prebuilt" = 1 ]; then
    docker/base-images.sh
    packages=()
    for s in "${SERVICES[@]}"; do packages+=(-p "$s"); done
    if [ "$cargo" = 1 ]; then
        cargo build --locked --profile "$profile" "${packages[@]}"
    fi
    dir=$profile
    [ "$profile" = dev ] && dir=debug
    stage=target/docker-prebuilt
    rm -rf "$stage"
    mkdir -p "$stage"
    sh docker/rootfs.sh "target/$dir" "$stage" "${SERVICES[@]}"
    build_args=(--build-arg "PREBUILT=$stage" --build-arg RUST_IMAGE=debian:bookworm-slim)
else
    docker/base-images.sh --rust
fi

for s in "${SERVICES[@]}"; do
    echo "build-images.sh: building $repo/fargo-$s:$tag" >&2
    docker build -q --target "$s" "${build_args[@]}" -t "$repo/fargo-$s:$tag" . >/dev/null
done

echo "image sizes:"
for s in "${SERVICES[@]}"; do
    size=$(docker image inspect -f '{{.Size}}' "$repo/fargo-$s:$tag")
    awk -v n="$repo/fargo-$s:$tag" -v b="$size" 'BEGIN { printf "  %-28s %6.1f MB\n", n, b / 1e6 }'
done
