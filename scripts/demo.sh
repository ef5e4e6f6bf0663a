#!/usr/bin/env bash
# Set up and run the main job on this machine, with no servers of your own: the lab boots
# 1 server + 2 agents (real Debian hosts), runs the bootstrap and cluster deploys against them
# through the pyinfra CLI, and prints the cluster's Nodes read through the Kubernetes API.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"
exec .venv/bin/k3sfleet lab demo "$@"
