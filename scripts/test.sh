#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite: unit tests, lab tests on real
# Debian hosts (systemd-nspawn), PostgreSQL, S3 (moto) and helm tests; then ruff and mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.tools/bin:$PWD/.venv/bin:$PATH"
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
