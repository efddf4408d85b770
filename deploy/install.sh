#!/usr/bin/env bash
# Install the chat service on this machine as a systemd unit (run as root).
#   deploy/install.sh [NODE_ID CLUSTER]
# Copies the project to /opt/chat, builds its virtualenv, creates the `chat` user,
# installs /etc/chat/chatnode.env (kept if present) and the unit. Repeat on every
# member with its own NODE_ID, then `systemctl enable --now chatnode` on each.
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
chown -R chat:chat /var/lib/chat
install -m 0644 "$src/deploy/systemd/chatnode.service" /etc/systemd/system/chatnode.service
systemctl daemon-reload 2>/dev/null || true
echo "installed; edit /etc/chat/chatnode.env, then: systemctl enable --now chatnode"
