#!/usr/bin/env bash
# The Docker part of CI: base images made here (no registry), the four images built from
# binaries compiled on this host (PREBUILT mode), then the end-to-end test against the
# real engine (docker/e2e/tests/compose.rs): compose up and wait, one authenticated call
# per service through the published port, the logging sidecar's records, one on-demand job
# container per video dropped into a folder `fargo watch --backend docker` watches, and a
# clean `down`. From a machine with no images at all, it makes the base images first.
#
# Usage: docker/e2e.sh [--no-build] [--profile dev|release]
#   --no-build: reuse the images already built
#   --profile:  cargo profile of the prebuilt binaries (default release; dev reuses what
#               `cargo test --workspace` already compiled, which keeps CI minutes down)
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
    --no-build) build=0; shift ;;
    --profile) profile=$2; shift 2 ;;
    *) echo "e2e.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if ! docker info >/dev/null 2>&1; then
    echo "e2e.sh: FAIL: the Docker engine is unreachable (docker info: $(docker info 2>&1 | tail -n1))" >&2
    exit 1
fi

start=$SECONDS
test_args=(--include-ignored --nocapture --test-threads=1)
if [ "$profile" = dev ]; then
    # Exactly the build `scripts/test` (cargo test --workspace) makes: the same targets, so
    # the same unified features, and in CI nothing recompiles. It leaves the four services'
    # and fargo's binaries in target/debug (their integration tests need them) and names the
    # end-to-end test's executable, which then runs directly.
    exe=$(cargo test --locked --workspace --no-run --message-format=json |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    t = m.get("target", {})
    if m.get("executable") and t.get("name") == "compose" and "test" in t.get("kind", []):
        print(m["executable"])
')
    [ -x "$exe" ] || { echo "e2e.sh: no compose test executable from cargo test --no-run" >&2; exit 1; }
    if [ "$build" = 1 ]; then
        docker/build-images.sh --prebuilt --profile dev --no-cargo
        echo "e2e.sh: images built in $((SECONDS - start))s" >&2
    fi
    t=$SECONDS
    "$exe" "${test_args[@]}"
else
    if [ "$build" = 1 ]; then
        docker/build-images.sh --prebuilt --profile "$profile"
        echo "e2e.sh: images built in $((SECONDS - start))s" >&2
    fi
    t=$SECONDS
    # The on-demand check runs the invoker itself: `fargo watch --backend docker`.
    cargo build --locked -p fargo --bin fargo
    cargo test --locked -p fargo-docker-e2e --test compose -- "${test_args[@]}"
fi
echo "e2e.sh: end-to-end test took $((SECONDS - t))s; $((SECONDS - start))s in all" >&2
