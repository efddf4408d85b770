#!/usr/bin/env bash
# Run a local cluster in the background on 127.0.0.1:7001.. (one machine, for trying it out).
#   deploy/local-cluster.sh start|stop|status
# Data and logs live in $CHAT_HOME (default ~/.local/share/chat): node-N/ and node-N.log,
# and the cluster secret the nodes and chatctl share (cluster.secret, made once, mode 0600).
# The nodes are chatnode/local_cluster.py's, the module the tests and the bench use.
set -euo pipefail
cd "$(dirname "$0")/.."
home="${CHAT_HOME:-$HOME/.local/share/chat}"
nodes="${CHAT_LOCAL_NODES:-3}"
local_cluster() { .venv/bin/python -m chatnode.local_cluster "$1" --home "$home" --nodes "$nodes"; }

case "${1:-}" in
  start | stop | spec | secret) local_cluster "$1" ;;
  status) .venv/bin/chatctl --cluster "$(local_cluster spec)" status ;;
  *) echo "usage: $0 start|stop|status|spec|secret" >&2; exit 2 ;;
esac
