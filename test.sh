#!/usr/bin/env bash
# Run the whole test suite: installs what it needs into .venv first.
# Usage: ./test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")"
source deploy/venv.sh
ensure_venv test
ensure_wheelhouse
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/pytest -q "$@"
