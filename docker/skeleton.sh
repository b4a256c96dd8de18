#!/bin/sh
# Copies the workspace's manifests into OUT with a stub for every Rust source file, so the
# Dockerfile can compile the dependencies in a layer that stays cached until Cargo.toml,
# Cargo.lock or a crate's manifest changes (what cargo-chef does, without the download).
#
# Entry points (main.rs, build.rs, src/bin, benches, examples) become `fn main() {}`,
# every other .rs file becomes empty, so each declared target still exists.
#
# Usage: docker/skeleton.sh SRC_DIR OUT_DIR
set -eu

[ $# -eq 2 ] || {
    echo "usage: skeleton.sh SRC_DIR OUT_DIR" >&2
    exit 2
}
src=$1
out=$2
mkdir -p "$out"
cd "$src"

cp Cargo.toml Cargo.lock "$out/"
find . -path ./target -prune -o -path ./.git -prune -o -name Cargo.toml -print |
    while read -r manifest; do
        mkdir -p "$out/$(dirname "$manifest")"
        cp "$manifest" "$out/$manifest"
    done

find . -path ./target -prune -o -path ./.git -prune -o -name '*.rs' -print |
    while read -r file; do
        mkdir -p "$out/$(dirname "$file")"
        case "$file" in
        */main.rs | */build.rs | */src/bin/* | */benches/* | */examples/*)
            echo 'fn main() {}' >"$out/$file"
            ;;
        *)
            : >"$out/$file"
            ;;
        esac
    done
