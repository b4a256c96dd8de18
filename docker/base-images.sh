#!/usr/bin/env bash
# Makes, on a machine whose Docker engine cannot pull images, the base images the
# Dockerfile names, from this machine's own Debian mirror and Rust toolchain:
#
#   debian:bookworm-slim        debootstrap --variant=minbase of bookworm, `docker import`ed
#   rust:1.95-slim-bookworm     (only with --rust) the same root file system plus gcc and
#                               libc6-dev, like the official slim image, with the host's
#                               rustup toolchain copied to /usr/local/rustup
#
# With a registry none of this is needed: `docker build` pulls the real images.
# An image that already exists is kept (use --force to remake it).
#
# Usage: docker/base-images.sh [--rust] [--force]
set -euo pipefail

DEBIAN_IMAGE=debian:bookworm-slim
# Keep in step with `ARG RUST_IMAGE` in the Dockerfile.
RUST_IMAGE=rust:1.95-slim-bookworm

want_rust=0
force=0
for arg in "$@"; do
    case "$arg" in
    --rust) want_rust=1 ;;
    --force) force=1 ;;
    -h | --help)
        sed -n '2,15p' "$0"
        exit 0
        ;;
    *)
        echo "base-images.sh: unknown argument $arg" >&2
        exit 2
        ;;
    esac
done

die() {
    echo "base-images.sh: $*" >&2
    exit 1
}

docker info >/dev/null 2>&1 || die "the Docker engine is unreachable (docker info failed); start dockerd first"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"

have_image() { [ "$force" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }

# The Debian mirror apt already uses here (deb822 or one-line sources), so debootstrap
# reaches the same registry apt does.
mirror() {
    local m
    m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$m" ]; then
        m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

work=$(mktemp -d /var/tmp/fargo-base.XXXXXX)
cleanup() {
    # debootstrap mounts /proc in the target; never delete through a live mount.
    for m in proc sys dev/pts; do
        mountpoint -q "$work/rootfs/$m" 2>/dev/null && umount -l "$work/rootfs/$m" || true
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# Bootstraps bookworm (minbase) with extra packages into $work/rootfs.
bootstrap() {
    local include=$1
    rm -rf --one-file-system "$work/rootfs"
    local args=(--variant=minbase)
    [ -n "$include" ] && args+=("--include=$include")
    echo "base-images.sh: debootstrap bookworm from $(mirror) ${include:+(+ $include)}" >&2
    debootstrap "${args[@]}" bookworm "$work/rootfs" "$(mirror)" >"$work/debootstrap.log" 2>&1 ||
        {
            tail -n 20 "$work/debootstrap.log" >&2
            die "debootstrap failed"
        }
    # What the official slim image drops: apt lists, caches, docs, man pages.
    rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin \
        "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/usr/share/doc/* \
        "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/info/*
}

# Tars $work/rootfs (without the pseudo file systems) into `docker import`.
import() {
    local name=$1
    shift
    tar -C "$work/rootfs" --numeric-owner --one-file-system \
        --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -c . |
        docker import "$@" - "$name" >/dev/null
    echo "base-images.sh: made $name ($(docker image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
}

if have_image "$DEBIAN_IMAGE"; then
    echo "base-images.sh: $DEBIAN_IMAGE exists" >&2
else
    bootstrap ""
    import "$DEBIAN_IMAGE" -c 'CMD ["bash"]'
fi

if [ "$want_rust" = 1 ]; then
    if have_image "$RUST_IMAGE"; then
        echo "base-images.sh: $RUST_IMAGE exists" >&2
    else
        command -v rustc >/dev/null || die "no rustc on this machine to copy into $RUST_IMAGE"
        sysroot=$(rustc --print sysroot)
        version=$(rustc --version | awk '{print $2}')
        bootstrap "gcc,libc6-dev,ca-certificates"
        dest="$work/rootfs/usr/local/rustup/toolchains/$version-x86_64-unknown-linux-gnu"
        mkdir -p "$dest" "$work/rootfs/usr/local/cargo/bin"
        # The toolchain without its 800 MB of HTML docs.
        tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$dest" -x
        # This machine's own trust store too: where registries are reached through a
        # TLS-inspecting proxy, cargo inside the image must trust the proxy's CA as the host does.
        if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
            mkdir -p "$work/rootfs/usr/local/share/ca-certificates"
            cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
            cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
        fi
        for bin in cargo rustc rustdoc; do
            ln -s "../../rustup/toolchains/$version-x86_64-unknown-linux-gnu/bin/$bin" \
                "$work/rootfs/usr/local/cargo/bin/$bin"
        done
        import "$RUST_IMAGE" \
            -c 'ENV RUSTUP_HOME=/usr/local/rustup' \
            -c 'ENV CARGO_HOME=/usr/local/cargo' \
            -c 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            -c 'CMD ["bash"]'
    fi
fi
