#!/usr/bin/env bash
# `docker compose up -d --wait` for either Compose: the plugin (v2) has --wait, the
# docker-compose v1 that Debian ships does not. Starts the assembly detached, then waits
# until every container is running and healthy. A container that exits or turns unhealthy
# fails the wait at once, naming it with its exit code or last health-check output and its
# last log lines, as `up --wait` should.
#
# Usage: docker/compose-up.sh [-f FILE] [-p PROJECT] [--timeout SECONDS] [SERVICE...]
#        (FARGO_PORT_GRPC, FARGO_DATA, IMAGE_REPO, IMAGE_TAG are read by the compose file)
set -uo pipefail

files=()
project=()
timeout=180
services=()
while [ $# -gt 0 ]; do
    case "$1" in
    -f) files+=(-f "$2"); shift 2 ;;
    -p) project=(-p "$2"); shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) services+=("$1"); shift ;;
    esac
done

if ! docker info >/dev/null 2>&1; then
    echo "compose-up.sh: the Docker engine is unreachable (docker info failed)" >&2
    exit 1
fi
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
    wait_flag=(--wait)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
    wait_flag=()
else
    echo "compose-up.sh: neither \`docker compose\` nor docker-compose is installed" >&2
    exit 1
fi
compose+=("${files[@]}" "${project[@]}")

# name, state and health of each container of the project, one per line.
states() {
    local ids
    ids=$("${compose[@]}" ps -q 2>/dev/null)
    [ -n "$ids" ] || return 0
    # shellcheck disable=SC2086
    docker inspect -f '{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}} {{.Id}}' $ids
}

report() {
    local name=$1 id=$2 why=$3
    echo "compose-up.sh: $name $why" >&2
    local probe
    probe=$(docker inspect -f '{{if .State.Health}}{{range .State.Health.Log}}{{.Output}}{{end}}{{end}}' "$id" 2>/dev/null | tail -n 3)
    [ -n "$probe" ] && printf '  last health checks:\n%s\n' "$probe" | sed 's/^/  /' >&2
    echo "  last log lines of $name:" >&2
    docker logs --tail 20 "$id" 2>&1 | sed 's/^/    /' >&2
}

up_out=$(mktemp)
trap 'rm -f "$up_out"' EXIT
"${compose[@]}" up -d "${wait_flag[@]}" "${services[@]}" >"$up_out" 2>&1
up_rc=$?
cat "$up_out" >&2

deadline=$((SECONDS + timeout))
while :; do
    pending=()
    failed=0
    while read -r name status health code id; do
        [ -n "$name" ] || continue
        if [ "$status" = exited ] || [ "$status" = dead ]; then
            report "$name" "$id" "exited with code $code"
            failed=1
        elif [ "$health" = unhealthy ]; then
            report "$name" "$id" "is unhealthy"
            failed=1
        elif [ "$status" != running ] || { [ "$health" != healthy ] && [ "$health" != none ]; }; then
            pending+=("$name($status/$health)")
        fi
    done < <(states)
    if [ "$failed" = 1 ]; then
        exit 1
    fi
    if [ "$up_rc" != 0 ]; then
        # up failed for a reason no container shows (image missing, port taken...).
        echo "compose-up.sh: \`${compose[*]} up\` failed (exit $up_rc)" >&2
        exit 1
    fi
    if [ ${#pending[@]} -eq 0 ]; then
        echo "compose-up.sh: every container is running and healthy" >&2
        exit 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        for p in "${pending[@]}"; do
            name=${p%%(*}
            id=$("${compose[@]}" ps -q "$name" 2>/dev/null | head -n1)
            report "$name" "$id" "did not become healthy within ${timeout}s ($p)"
        done
        exit 1
    fi
    sleep 1
done
