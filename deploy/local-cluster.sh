#!/usr/bin/env bash
# Run a local cluster in the background on 127.0.0.1:7001.. (one machine, for trying it out).
#   deploy/local-cluster.sh start|stop|status
# Data and logs live in $CHAT_HOME (default ~/.local/share/chat): node-N/ and node-N.log,
# and the cluster secret the nodes and chatctl share (cluster.secret, made once, mode 0600).
set -euo pipefail
cd "$(dirname "$0")/.."
home="${CHAT_HOME:-$HOME/.local/share/chat}"
nodes="${CHAT_LOCAL_NODES:-3}"
spec=""
for i in $(seq 1 "$nodes"); do spec="${spec:+$spec,}$i=127.0.0.1:$((7000 + i))"; done

secret="$home/cluster.secret"

alive() { [ -f "$home/node-$1.pid" ] && kill -0 "$(cat "$home/node-$1.pid")" 2>/dev/null; }

start() {
  mkdir -p "$home"
  [ -f "$secret" ] || .venv/bin/chatctl secret new "$secret" >/dev/null
  for i in $(seq 1 "$nodes"); do
    if alive "$i"; then continue; fi
    nohup .venv/bin/chatnode --id "$i" --cluster "$spec" --data-dir "$home/node-$i" \
      --cluster-secret-file "$secret" >>"$home/node-$i.log" 2>&1 &
    echo $! >"$home/node-$i.pid"
  done
  for _ in $(seq 1 100); do
    if .venv/bin/chatctl --cluster "$spec" status 2>/dev/null | grep -q ' leader '; then
      echo "cluster $spec is up; data and logs in $home"
      return 0
    fi
    sleep 0.2
  done
  echo "local-cluster: no leader after 20 s; see $home/node-*.log" >&2
  return 1
}

stop() {
  for i in $(seq 1 "$nodes"); do
    if alive "$i"; then kill -TERM "$(cat "$home/node-$i.pid")"; fi
  done
  for i in $(seq 1 "$nodes"); do
    for _ in $(seq 1 100); do alive "$i" || break; sleep 0.1; done
    rm -f "$home/node-$i.pid"
  done
  echo "cluster stopped; data kept in $home"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) .venv/bin/chatctl --cluster "$spec" status ;;
  spec) echo "$spec" ;;
  secret) echo "$secret" ;;
  *) echo "usage: $0 start|stop|status|spec|secret" >&2; exit 2 ;;
esac
