#!/usr/bin/env bash
# Install (or upgrade) the chat service on this machine as a systemd unit. Run as root.
#   deploy/install.sh [--id N --cluster SPEC] [--secret FILE] [--tls-dir DIR]
#                     [--min-insync N] [--metrics-listen HOST:PORT] [--join] [--wheels DIR]
#                     [--config-only]
# deploy/cluster.sh runs it on every machine; it also works alone on one machine.
#
# - The project goes to /opt/chat-releases/REV (REV: a digest of its files) with its own
#   virtualenv, and /opt/chat is switched to it in one rename. A running node keeps the
#   release it started from; the next (re)start runs the new one. The two newest
#   earlier releases are kept for a rollback (point /opt/chat back and restart).
#   Dependencies are the locked ones (deploy/node-requirements.txt, exported from uv.lock,
#   hash-checked), so every node runs the same versions; --wheels DIR installs them from
#   a wheelhouse, with no index (offline). The release's digest covers the lock.
# - The `chat` user owns /var/lib/chat (the node's data) and the secret and TLS key.
# - /etc/chat/chatnode.env: --id, --cluster, --min-insync, --metrics-listen, --join and the
#   secret and TLS paths set their lines; other lines are kept, so local settings survive
#   re-runs.
#   /etc/chat/chatctl.env holds what chatctl on this machine needs; /usr/local/bin/chatctl
#   reads it, so `chatctl status` works here as root.
# - /etc/chat/cluster.secret (0600, chat): from --secret, else kept, else made fresh (copy
#   it to every other member). --tls-dir DIR holds ca.pem, node.pem, node.key and
#   optionally admin.pem and admin.key (an operator certificate, for chatctl here).
# - The unit goes to /etc/systemd/system/chatnode.service. Nothing is started or
#   restarted: `systemctl enable --now chatnode` (or restart, to run a new release).
# The last line printed is `release=REV changed=0|1`.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
umask 022
src="$(cd "$(dirname "$0")/.." && pwd)"
releases=/opt/chat-releases
env_file=/etc/chat/chatnode.env
ctl_env=/etc/chat/chatctl.env

usage() { echo "usage: $0 [--id N --cluster SPEC] [--secret FILE] [--tls-dir DIR] [--min-insync N] [--metrics-listen HOST:PORT] [--join] [--wheels DIR] [--config-only]" >&2; exit 2; }

node_id="" cluster="" secret="" tls_dir="" min_insync="" metrics_listen="" join=0 wheels="" config_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --id) node_id="${2:?}"; shift 2 ;;
    --cluster) cluster="${2:?}"; shift 2 ;;
    --secret) secret="${2:?}"; shift 2 ;;
    --tls-dir) tls_dir="${2:?}"; shift 2 ;;
    --min-insync) min_insync="${2:?}"; shift 2 ;;
    --metrics-listen) metrics_listen="${2:?}"; shift 2 ;;
    --join) join=1; shift ;;
    --wheels) wheels="${2:?}"; shift 2 ;;
    --config-only) config_only=1; shift ;;
    *) usage ;;
  esac
done
{ [ -n "$node_id" ] && [ -n "$cluster" ]; } || { [ -z "$node_id" ] && [ -z "$cluster" ]; } || usage

# A digest of the project's files (not their times), so the same tree is the same release.
# deploy/release.exclude names what is not part of a release (also for cluster.sh).
release_tar() {
  tar -c -C "$1" -X "$src/deploy/release.exclude" --sort=name --mtime=@0 --owner=0 \
    --group=0 --numeric-owner .
}
tree_rev() { release_tar "$1" | sha256sum | cut -c1-12; }

# Build the release in its final place (a virtualenv's scripts name their own path) and
# mark it complete last, so a half-built release is rebuilt, never run.
build_release() {
  local dir="$releases/$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  release_tar "$src" | tar -x -C "$dir" --no-same-owner --no-same-permissions
  chmod -R u+rwX,go+rX-w "$dir"  # whatever the copy's modes, the chat user reads it
  echo "$1" >"$dir/RELEASE"  # what `chatnode --version` and `chatctl status` report
  python3 -m venv "$dir/.venv"
  local pip=("$dir/.venv/bin/pip" install --quiet --disable-pip-version-check)
  [ -n "$wheels" ] && pip+=(--no-index --find-links "$wheels")
  # The locked versions, hash-checked, then the project over them with nothing more.
  { "${pip[@]}" --require-hashes --no-deps -r "$dir/deploy/node-requirements.txt" \
      && "${pip[@]}" --no-deps --no-build-isolation "$dir"; } >"$dir/.install.log" 2>&1 || {
    tail -5 "$dir/.install.log" >&2; echo "install.sh: pip install failed" >&2; exit 1; }
  touch "$dir/.complete"
}

switch_to() {
  if [ -d /opt/chat ] && [ ! -L /opt/chat ]; then  # an install from before releases
    mv /opt/chat "$releases/before-releases-$(date +%Y%m%d%H%M%S)"
  fi
  ln -sfn "$releases/$1" /opt/chat.switch
  mv -T /opt/chat.switch /opt/chat
  # Keep the current release and the two newest others.
  ls -1t "$releases" | { grep -vx "$1" || true; } | tail -n +3 | while read -r old; do
    rm -rf "${releases:?}/$old"
  done
}

# Set KEY=VALUE in an env file, replacing its line (commented or not) or appending one.
set_key() {
  local file="$1" key="$2" value="$3"
  if grep -qE "^#?$key=" "$file"; then
    sed -i -E "s|^#?$key=.*|$key=$value|" "$file"
  else
    echo "$key=$value" >>"$file"
  fi
}

# member_address: this node's address in the cluster spec (empty without --id).
member_address() { tr ',' '\n' <<<"$cluster" | sed -n "s/^$node_id=//p"; }

configure() {
  mkdir -p /etc/chat
  [ -f "$env_file" ] || cp "$src/deploy/chatnode.env.example" "$env_file"
  if [ -n "$node_id" ]; then
    set_key "$env_file" CHAT_NODE_ID "$node_id"
    set_key "$env_file" CHAT_CLUSTER "$cluster"
  fi
  [ -n "$min_insync" ] && set_key "$env_file" CHAT_MIN_INSYNC "$min_insync"
  [ -n "$metrics_listen" ] && set_key "$env_file" CHAT_METRICS_LISTEN "$metrics_listen"
  if [ "$join" = 1 ]; then set_key "$env_file" CHAT_JOIN 1; fi
  set_key "$env_file" CHAT_CLUSTER_SECRET_FILE /etc/chat/cluster.secret
  if [ -n "$secret" ]; then
    install -m 0600 -o chat -g chat "$secret" /etc/chat/cluster.secret
  elif [ ! -f /etc/chat/cluster.secret ]; then
    /opt/chat/.venv/bin/chatctl secret new /etc/chat/cluster.secret >/dev/null
    echo "made a new cluster secret in /etc/chat/cluster.secret: copy it to every other member"
  fi
  chown chat:chat /etc/chat/cluster.secret
  chmod 0600 /etc/chat/cluster.secret
  : >"$ctl_env.new"
  chmod 0600 "$ctl_env.new"
  grep -E '^CHAT_CLUSTER=' "$env_file" >>"$ctl_env.new" || true
  echo "CHAT_CLUSTER_SECRET_FILE=/etc/chat/cluster.secret" >>"$ctl_env.new"
  if [ -n "$tls_dir" ]; then
    install -d -m 0755 /etc/chat/tls
    install -m 0644 "$tls_dir/ca.pem" "$tls_dir/node.pem" /etc/chat/tls/
    install -m 0600 -o chat -g chat "$tls_dir/node.key" /etc/chat/tls/node.key
    if [ -f "$tls_dir/admin.pem" ]; then
      install -m 0600 "$tls_dir/admin.pem" "$tls_dir/admin.key" /etc/chat/tls/
    fi
    set_key "$env_file" CHAT_TLS_CA /etc/chat/tls/ca.pem
    set_key "$env_file" CHAT_TLS_CERT /etc/chat/tls/node.pem
    set_key "$env_file" CHAT_TLS_KEY /etc/chat/tls/node.key
    # A node with a client listener of its own (PEER/CLIENT in the cluster spec) serves chat
    # users server-only TLS with the same certificate: they present none.
    if [[ "$(member_address)" == */* ]]; then
      set_key "$env_file" CHAT_CLIENT_TLS_CERT /etc/chat/tls/node.pem
      set_key "$env_file" CHAT_CLIENT_TLS_KEY /etc/chat/tls/node.key
    fi
  fi
  if grep -qE '^CHAT_TLS_CA=' "$env_file"; then
    grep -E '^CHAT_TLS_CA=' "$env_file" >>"$ctl_env.new"
    if [ -f /etc/chat/tls/admin.pem ]; then
      printf 'CHAT_TLS_CERT=/etc/chat/tls/admin.pem\nCHAT_TLS_KEY=/etc/chat/tls/admin.key\n' \
        >>"$ctl_env.new"
    fi
  fi
  mv "$ctl_env.new" "$ctl_env"
  chmod 0644 "$env_file"
  install -d -m 0750 -o chat -g chat /var/lib/chat
}

if [ "$config_only" = 0 ]; then
  id -u chat >/dev/null 2>&1 || useradd --system --home /var/lib/chat --shell /usr/sbin/nologin chat
  rev="$(tree_rev "$src")"
  changed=0
  if [ ! -f "$releases/$rev/.complete" ]; then build_release "$rev"; changed=1; fi
  [ "$(readlink /opt/chat 2>/dev/null)" = "$releases/$rev" ] || { switch_to "$rev"; changed=1; }
else
  rev="$(basename "$(readlink /opt/chat)")"
  changed=0
fi
configure
install -m 0644 "$src/deploy/systemd/chatnode.service" /etc/systemd/system/chatnode.service
cat >/usr/local/bin/chatctl.new <<'EOF'
#!/bin/sh
# chatctl with this machine's cluster, secret and operator certificate (/etc/chat/chatctl.env).
set -a; . /etc/chat/chatctl.env; set +a
exec /opt/chat/.venv/bin/chatctl "$@"
EOF
chmod 0755 /usr/local/bin/chatctl.new
mv /usr/local/bin/chatctl.new /usr/local/bin/chatctl
systemctl daemon-reload 2>/dev/null || true
echo "release=$rev changed=$changed"
