#!/usr/bin/env bash
# Install the chat service on this machine as a systemd unit (run as root).
#   deploy/install.sh [NODE_ID CLUSTER [SECRET_FILE]]
# Copies the project to /opt/chat, builds its virtualenv, creates the `chat` user,
# installs /etc/chat/chatnode.env (kept if present) and the unit. Peer and admin calls
# need the cluster secret: /etc/chat/cluster.secret (mode 0600, owned by chat) is taken
# from SECRET_FILE, else kept if present, else made fresh. Every member needs the same
# secret: make it on the first machine and copy it to the others (e.g. with scp) as
# their SECRET_FILE. Repeat on every member with its own NODE_ID, then
# `systemctl enable --now chatnode` on each.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root" >&2; exit 1; }
src="$(cd "$(dirname "$0")/.." && pwd)"
id -u chat >/dev/null 2>&1 || useradd --system --home /var/lib/chat --shell /usr/sbin/nologin chat
mkdir -p /opt/chat /etc/chat /var/lib/chat
cp -a "$src/." /opt/chat/
rm -rf /opt/chat/.venv
python3 -m venv /opt/chat/.venv
/opt/chat/.venv/bin/pip install --quiet /opt/chat
if [ ! -f /etc/chat/chatnode.env ]; then
  cp "$src/deploy/chatnode.env.example" /etc/chat/chatnode.env
  if [ $# -ge 2 ]; then
    sed -i "s|^CHAT_NODE_ID=.*|CHAT_NODE_ID=$1|; s|^CHAT_CLUSTER=.*|CHAT_CLUSTER=$2|" /etc/chat/chatnode.env
  fi
fi
if [ $# -ge 3 ]; then
  install -m 0600 -o chat -g chat "$3" /etc/chat/cluster.secret
elif [ ! -f /etc/chat/cluster.secret ]; then
  /opt/chat/.venv/bin/chatctl secret new /etc/chat/cluster.secret
  echo "made a new cluster secret in /etc/chat/cluster.secret: copy it to every other member"
fi
chown chat:chat /etc/chat/cluster.secret
chmod 0600 /etc/chat/cluster.secret
chown -R chat:chat /var/lib/chat
install -m 0644 "$src/deploy/systemd/chatnode.service" /etc/systemd/system/chatnode.service
systemctl daemon-reload 2>/dev/null || true
echo "installed; edit /etc/chat/chatnode.env, then: systemctl enable --now chatnode"
