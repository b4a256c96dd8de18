#!/bin/sh
# Stages the root file system of each runtime image: the binary, exactly the shared
# libraries `ldd` resolves for it (FFmpeg's for thumbnail, glibc's for all), the CA
# bundle, and passwd/group entries for the non-root user 10001. The runtime stages in
# the Dockerfile are `FROM scratch` plus one of these trees, so an image holds no shell,
# no package manager and no library its binary does not link.
#
# Runs in the Dockerfile's build stage, and on the host for prebuilt binaries
# (docker/build-images.sh --prebuilt); the host must then be Debian bookworm, like the
# images, so the libraries match the ones the binary was linked against.
#
# Usage: docker/rootfs.sh BIN_DIR OUT_DIR NAME...
set -eu

[ $# -ge 3 ] || {
    echo "usage: rootfs.sh BIN_DIR OUT_DIR NAME..." >&2
    exit 2
}
bin_dir=$1
out=$2
shift 2

for name in "$@"; do
    bin="$bin_dir/$name"
    [ -x "$bin" ] || {
        echo "rootfs.sh: $bin is missing or not executable" >&2
        exit 1
    }
    root="$out/$name"
    rm -rf "$root"
    mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/tmp"
    chmod 1777 "$root/tmp"
    # Line tables are dropped: backtraces keep function names from the symbol table,
    # and the sidecar images must stay small.
    objcopy --strip-debug "$bin" "$root/usr/local/bin/$name"

    # `ldd` prints "libx.so => /path (addr)" and the loader as "/lib64/ld-linux... (addr)".
    libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
    if ldd "$bin" | grep -q 'not found'; then
        ldd "$bin" | grep 'not found' >&2
        echo "rootfs.sh: $name links libraries this system lacks" >&2
        exit 1
    fi
    for lib in $libs; do
        mkdir -p "$root$(dirname "$lib")"
        # -L: the image gets the real file under the name the loader asks for.
        cp -L "$lib" "$root$lib"
    done

    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
    fi
    printf 'root:x:0:0:root:/root:/sbin/nologin\nfargo:x:10001:10001:fargo:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
    printf 'root:x:0:\nfargo:x:10001:\n' >"$root/etc/group"
    echo "rootfs.sh: $name: $(du -sh "$root" | cut -f1) ($(echo "$libs" | wc -w) shared objects)" >&2
done
