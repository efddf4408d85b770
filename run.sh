#!/usr/bin/env bash
# Start the product: a local cluster in the background (reused if running) and the chat client.
# Stop the cluster with: deploy/local-cluster.sh stop
set -euo pipefail
cd "$(dirname "$0")"
source deploy/venv.sh
ensure_venv
deploy/local-cluster.sh start
exec .venv/bin/chat --cluster "$(deploy/local-cluster.sh spec)" "$@"
