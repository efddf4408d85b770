#!/usr/bin/env bash
# Deploy and run a chat cluster on several machines, one node per machine, over ssh.
#
#   deploy/cluster.sh check HOSTS_FILE            # preflight: is each machine ready?
#   deploy/cluster.sh up HOSTS_FILE [--tls] [--min-insync N] [--metrics HOST:PORT] [--wheels DIR]
#   deploy/cluster.sh status HOSTS_FILE
#   deploy/cluster.sh upgrade HOSTS_FILE          # rolling: followers, then the leader
#   deploy/cluster.sh add HOSTS_FILE ID ADDRESS REACH
#   deploy/cluster.sh remove HOSTS_FILE ID
#   deploy/cluster.sh down HOSTS_FILE             # stop and disable every node; data kept
#   deploy/cluster.sh backup HOSTS_FILE FILE [ID] # a consistent copy of the leader's state
#   deploy/cluster.sh restore HOSTS_FILE FILE     # the whole cluster, from a backup or a snapshot
#   deploy/cluster.sh signal HOSTS_FILE ID SIGNAL|start   # for benchmarks and drills
#
# HOSTS_FILE has one line per machine: `ID ADDRESS REACH [user=NAME]`, where ADDRESS is
# HOST:PORT (one listener for everyone) or PEER_HOST:PORT/CLIENT_HOST:PORT (peers and
# operators on the first, chat users on the second; with --tls the second is server-only
# TLS, so chat users need only ca.pem), and REACH is how ssh reaches it (root@10.0.0.1, or
# a Host from ~/.ssh/config); '#' starts a comment. The ssh user is the line's user=, else
# CHAT_SSH_USER, else REACH's own. A user other than root needs passwordless sudo there:
# every command then runs under `sudo -n`.
# The cluster's secret, its CA and certificates (--tls), and the settings `up` was given
# live in HOSTS_FILE.d/ (CHAT_DEPLOY_DIR overrides it): keep that folder private.
#
# The one seam is the remote exec: CHAT_SSH (default `ssh -o BatchMode=yes -o
# ConnectTimeout=10`) is called as `$CHAT_SSH [USER@]HOST COMMAND` with stdin passed
# through, exactly like ssh. Every machine needs python3 (3.11 or later) with venv and,
# unless --wheels DIR gives a wheelhouse of the locked versions (deploy/venv.sh:
# ensure_wheelhouse), access to PyPI. Every verb is safe to re-run.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
read -r -a ssh_cmd <<<"${CHAT_SSH:-ssh -o BatchMode=yes -o ConnectTimeout=10}"
HEALTHY_TIMEOUT_S="${CHAT_HEALTHY_TIMEOUT_S:-60}"

die() { echo "cluster.sh: $*" >&2; exit 1; }
usage() { sed -n '4,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
say() { echo "cluster.sh: $*"; }

# -- the hosts file and the deploy folder ----------------------------------------------

ADDRESS_FORM="HOST:PORT or PEER_HOST:PORT/CLIENT_HOST:PORT"
member_address() { [[ "$1" =~ ^[^:/]+:[0-9]+(/[^:/]+:[0-9]+)?$ ]]; }

ids=()
declare -A address=() reach=() ssh_user=()
load_hosts() {
  hosts_file="$1"
  [ -f "$hosts_file" ] || die "no hosts file $hosts_file"
  state="${CHAT_DEPLOY_DIR:-$hosts_file.d}"
  ids=()
  local id addr how extra columns column
  while read -r id addr how extra; do
    case "$id" in ''|'#'*) continue ;; esac
    [[ "$id" =~ ^[1-9][0-9]*$ ]] || die "$hosts_file: bad id '$id' (a positive integer)"
    member_address "$addr" || die "$hosts_file: node $id: bad address '$addr' ($ADDRESS_FORM)"
    [ -n "$how" ] || die "$hosts_file: node $id: want 'ID ADDRESS REACH'"
    [ -z "${address[$id]+x}" ] || die "$hosts_file: node $id is listed twice"
    ids+=("$id"); address[$id]="$addr"; reach[$id]="$how"; ssh_user[$id]=""
    read -r -a columns <<<"$extra"
    for column in "${columns[@]}"; do
      case "$column" in
        user=?*) ssh_user[$id]="${column#user=}" ;;
        *) die "$hosts_file: node $id: unknown column '$column' (user=NAME)" ;;
      esac
    done
  done <"$hosts_file"
  [ ${#ids[@]} -gt 0 ] || die "$hosts_file lists no machines"
  settings="$state/settings"
  tls=0 min_insync="" wheels="" metrics=""
  # shellcheck disable=SC1090
  [ -f "$settings" ] && . "$settings"
  [ "$verb" = check ] || can_be_root  # check reports it instead
  return 0
}

spec() {
  local out="" id
  for id in "${ids[@]}"; do out="${out:+$out,}$id=${address[$id]}"; done
  echo "$out"
}

# node_ports ID: the ports node ID listens on, for `check`.
node_ports() {
  local part ports=()
  for part in ${address[$1]/\// }; do ports+=("${part##*:}"); done
  [ -n "$metrics" ] && ports+=("${metrics##*:}")
  echo "${ports[@]}"
}

save_settings() {
  mkdir -p "$state"
  chmod 0700 "$state"
  printf 'tls=%s\nmin_insync=%s\nwheels=%s\nmetrics=%s\n' "$tls" "$min_insync" "$wheels" "$metrics" \
    >"$settings"
}

# -- the seam ---------------------------------------------------------------------------

# login_user ID: the user ssh logs in as on node ID's machine, or nothing when ssh's
# config decides (then the machine itself tells whether sudo is needed: as_root).
login_user() {
  if [ -n "${ssh_user[$1]:-}" ]; then echo "${ssh_user[$1]}"
  elif [ -n "${CHAT_SSH_USER:-}" ]; then echo "$CHAT_SSH_USER"
  elif [[ "${reach[$1]}" == *@* ]]; then echo "${reach[$1]%%@*}"
  fi
}

# target ID: what ssh is given for node ID: REACH, under the chosen user.
target() {
  local user
  user="$(login_user "$1")"
  echo "${user:+$user@}${reach[$1]#*@}"
}

# login ID COMMAND: run COMMAND with sh on node ID's machine, as the ssh user.
login() { "${ssh_cmd[@]}" "$(target "$1")" "$2"; }

# remote ID COMMAND: run COMMAND with sh on node ID's machine, as root.
remote() { login "$1" "$(as_root "$2")"; }

# as_root COMMAND: COMMAND for sh, through `sudo -n` unless the login is root already.
as_root() {
  local quoted="'${1//\'/\'\\\'\'}'"
  printf 'r=; [ "$(id -u)" = 0 ] || r="sudo -n"; exec $r sh -c %s' "$quoted"
}

# can_be_root: before a verb changes anything, every non-root ssh user must have
# passwordless sudo; one line names the first machine where it does not.
can_be_root() {
  local id user out
  for id in "${ids[@]}"; do
    user="$(login_user "$id")"
    if [ -z "$user" ] || [ "$user" = root ]; then continue; fi
    out="$(login "$id" 'sudo -n true' 2>&1)" && continue
    die "node $id: $(target "$id"): sudo -n fails (${out##*$'\n'}): a non-root ssh user needs passwordless sudo"
  done
}

# ctl COMMAND...: chatctl on the first machine that answers (it knows the cluster's
# secret and, with --tls, holds an operator certificate: /etc/chat/chatctl.env).
ctl() {
  local id out last=""
  for id in "${ids[@]}"; do
    if out="$(remote "$id" "chatctl $*" 2>&1)"; then printf '%s\n' "$out"; return 0; fi
    last="$out"
  done
  printf '%s\n' "${last:-no machine answered}" >&2
  return 1
}

# shellcheck source=deploy/preflight.sh
. "$repo/deploy/preflight.sh"

# -- secrets and certificates -----------------------------------------------------------

make_secret() {
  [ -f "$state/cluster.secret" ] && return 0
  (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$state/cluster.secret")
  say "made the cluster secret in $state/cluster.secret"
}

# issue NAME SAN: a key and a certificate signed by the deploy CA (made on first use).
issue() {
  local dir="$state/tls" name="$1" san="$2"
  mkdir -p "$dir"
  chmod 0700 "$dir"
  if [ ! -f "$dir/ca.pem" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 3650 -subj "/CN=chat cluster CA" 2>/dev/null
    say "made a CA in $dir/ca.pem"
  fi
  [ -f "$dir/$name.pem" ] && return 0
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$san" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 825 -out "$dir/$name.pem" -extfile "$dir/$name.ext" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# host_sans ADDRESS: the subjectAltName entries of the hosts in a member address.
host_sans() {
  local part host out=""
  for part in ${1/\// }; do
    host="${part%:*}"
    if [[ "$host" =~ ^[0-9.]+$ ]]; then host="IP:$host"; else host="DNS:$host"; fi
    [[ ",$out," == *",$host,"* ]] || out="${out:+$out,}$host"
  done
  echo "$out"
}

make_certificates() {
  local id
  issue admin "URI:chat://admin"
  issue client "DNS:chat-client"   # for chat users: opens the chat API only
  for id in "${ids[@]}"; do issue "node-$id" "URI:chat://node/$id,$(host_sans "${address[$id]}")"; done
}

# -- installing one machine -------------------------------------------------------------

# payload ID: a tar stream of the project (src/) and node ID's secrets (secrets/).
payload() {
  local id="$1" tmp
  tmp="$(umask 077 && mktemp -d)"
  (umask 077 && mkdir "$tmp/secrets")
  (
    umask 077
    cp "$state/cluster.secret" "$tmp/secrets/"
    if [ "$tls" = 1 ]; then
      mkdir "$tmp/secrets/tls"
      cp "$state/tls/ca.pem" "$state/tls/admin.pem" "$state/tls/admin.key" "$tmp/secrets/tls/"
      cp "$state/tls/node-$id.pem" "$tmp/secrets/tls/node.pem"
      cp "$state/tls/node-$id.key" "$tmp/secrets/tls/node.key"
    fi
  )
  tar -cz -C "$tmp" secrets -C "$repo" -X "$repo/deploy/release.exclude" \
    --exclude="./$(realpath --relative-to="$repo" "$state")" --transform 's|^\./|src/|' .
  rm -rf "$tmp"
}

# install ID [install.sh flags...]: ship and install the project and node ID's files.
install_on() {
  local id="$1"; shift
  local flags=(--id "$id" --cluster "$(spec)" "$@")
  [ -n "$min_insync" ] && flags+=(--min-insync "$min_insync")
  [ -n "$metrics" ] && flags+=(--metrics-listen "$metrics")
  [ "$tls" = 1 ] && flags+=(--tls-dir '"$t"/secrets/tls')
  if [ -n "$wheels" ]; then
    remote "$id" "rm -rf /var/tmp/chat-wheels && mkdir -p /var/tmp/chat-wheels && tar -x -C /var/tmp/chat-wheels" \
      < <(tar -c -C "$wheels" .)
    flags+=(--wheels /var/tmp/chat-wheels)
  fi
  payload "$id" | remote "$id" "set -e; t=\$(mktemp -d); trap 'rm -rf \"\$t\"' EXIT
    tar -xz -C \"\$t\" --no-same-owner
    bash \"\$t/src/deploy/install.sh\" --secret \"\$t/secrets/cluster.secret\" ${flags[*]}"
}

# reconfigure ID: node ID's env files name the current members (no restart needed: a
# running node takes its members from the log; the list matters to chatctl and a rebuild).
reconfigure() {
  remote "$1" "bash /opt/chat/deploy/install.sh --config-only --id $1 --cluster $(spec) \
    ${min_insync:+--min-insync $min_insync}" >/dev/null
}

# join_node ID: install node ID, make it a member, start it with --join and wait until
# it is in sync (ids must already include it).
join_node() {
  local id="$1" out
  [ "$tls" = 1 ] && issue "node-$id" "URI:chat://node/$id,$(host_sans "${address[$id]}")"
  out="$(install_on "$id" --join)" || die "node $id: install failed"
  say "node $id: ${out##*$'\n'}"
  is_member "$id" || ctl add-member "$id" "${address[$id]}" >/dev/null
  remote "$id" "systemctl enable --now chatnode"
  wait_healthy "${ids[@]}"
}

stop_all() {
  local id
  for id in "${ids[@]}"; do
    remote "$id" "systemctl disable --now chatnode" && say "node $id: stopped"
  done
}

# -- waiting on the cluster -------------------------------------------------------------

# healthy IDS: one leader, and every listed id a member, up, in sync and caught up.
healthy() {
  local rows
  rows="$(ctl status --json 2>/dev/null)" || return 1
  python3 -c '
import json, sys
rows = json.loads(sys.argv[1]); want = {int(i) for i in sys.argv[2].split(",")}
leaders = {r["id"] for r in rows if r.get("up") and r.get("role") == "leader"}
good = {r["id"] for r in rows if r.get("up") and r.get("member") and r.get("in_sync")
        and r.get("lag", 1) == 0}
sys.exit(0 if len(leaders) == 1 and want <= good else 1)' "$rows" "$(IFS=,; echo "$*")"
}

wait_healthy() {
  local deadline=$((SECONDS + HEALTHY_TIMEOUT_S))
  until healthy "$@"; do
    [ $SECONDS -lt $deadline ] || { ctl status >&2 || true; die "the cluster is not healthy after ${HEALTHY_TIMEOUT_S}s"; }
    sleep 0.5
  done
}

# is_member ID: node ID is in the leader's member list.
is_member() {
  ctl status --json | python3 -c '
import json, sys
sys.exit(0 if any(r.get("id") == int(sys.argv[1]) and r.get("member") for r in json.load(sys.stdin)) else 1)' "$1"
}

# leader_id: the id of the node that leads now.
leader_id() {
  ctl status --json | python3 -c '
import json, sys
print(next(r["id"] for r in json.load(sys.stdin) if r.get("up") and r.get("role") == "leader"))'
}

# stale ID: true when node ID runs another release than /opt/chat (or does not run).
stale() {
  remote "$1" 'pid=$(systemctl show -p MainPID --value chatnode); [ "${pid:-0}" != 0 ] || exit 0
    rel=$(readlink /opt/chat); ! tr "\0" " " </proc/$pid/cmdline | grep -q -- "$rel/"'
}

restart_node() {
  say "node $1: restarting"
  remote "$1" "systemctl restart chatnode"
  wait_healthy "${ids[@]}"
}

# -- verbs ------------------------------------------------------------------------------

cmd_up() {
  load_hosts "$1"; shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --tls) tls=1; shift ;;
      --min-insync) min_insync="${2:?--min-insync needs N}"; shift 2 ;;
      --wheels) wheels="$(cd "${2:?--wheels needs DIR}" && pwd)"; shift 2 ;;
      --metrics) metrics="${2:?--metrics needs HOST:PORT}"; shift 2
        [[ "$metrics" =~ ^[^:[:space:]]*:[0-9]+$ ]] || die "bad --metrics '$metrics' (HOST:PORT)" ;;
      *) usage ;;
    esac
  done
  save_settings
  make_secret
  [ "$tls" = 1 ] && make_certificates
  local id pids=() failed=0
  for id in "${ids[@]}"; do
    install_on "$id" >"$state/install-$id.log" 2>&1 &
    pids+=($!)
  done
  for i in "${!ids[@]}"; do
    if wait "${pids[$i]}"; then
      say "node ${ids[$i]}: $(tail -1 "$state/install-${ids[$i]}.log")"
    else
      failed=1; echo "cluster.sh: node ${ids[$i]}: install failed:" >&2
      tail -5 "$state/install-${ids[$i]}.log" >&2
    fi
  done
  [ "$failed" = 0 ] || exit 1
  for id in "${ids[@]}"; do remote "$id" "systemctl enable --now chatnode"; done
  wait_healthy "${ids[@]}"
  ctl status
}

cmd_status() {
  load_hosts "$1"
  ctl status
}

cmd_upgrade() {
  load_hosts "$1"
  local id leader out
  for id in "${ids[@]}"; do
    out="$(install_on "$id")" || die "node $id: install failed"
    say "node $id: ${out##*$'\n'}"
  done
  wait_healthy "${ids[@]}"
  leader="$(leader_id)"
  for id in "${ids[@]}"; do
    if [ "$id" != "$leader" ] && stale "$id"; then restart_node "$id"; fi
  done
  if stale "$leader"; then
    local to
    for to in "${ids[@]}"; do [ "$to" != "$leader" ] && break; done
    if [ "$to" != "$leader" ]; then
      say "leader $leader: handing over to node $to"
      ctl transfer-leader "$to" >/dev/null
    fi
    restart_node "$leader"
  fi
  say "every node runs $(remote "${ids[0]}" 'basename "$(readlink /opt/chat)"')"
  ctl status
}

cmd_add() {
  load_hosts "$1"
  local id="${2:?usage: add HOSTS_FILE ID ADDRESS REACH}" addr="${3:?}" how="${4:?}"
  [[ "$id" =~ ^[1-9][0-9]*$ ]] || die "bad id '$id'"
  member_address "$addr" || die "bad address '$addr' ($ADDRESS_FORM)"
  if [ -n "${address[$id]+x}" ]; then
    [ "${address[$id]}" = "$addr" ] || die "node $id is already in $hosts_file at ${address[$id]}"
  else
    ids+=("$id"); address[$id]="$addr"; reach[$id]="$how"
  fi
  join_node "$id"
  grep -qE "^${id}[[:space:]]" "$hosts_file" || echo "$id $addr $how" >>"$hosts_file"
  for other in "${ids[@]}"; do [ "$other" = "$id" ] || reconfigure "$other"; done
  wait_healthy "${ids[@]}"
  ctl status
}

cmd_remove() {
  load_hosts "$1"
  local id="${2:?usage: remove HOSTS_FILE ID}"
  [ -n "${address[$id]+x}" ] || die "node $id is not in $hosts_file"
  local rest=() other
  for other in "${ids[@]}"; do [ "$other" = "$id" ] || rest+=("$other"); done
  [ ${#rest[@]} -gt 0 ] || die "node $id is the last one: use down"
  if [ "$(leader_id)" = "$id" ]; then
    say "node $id leads: handing over to node ${rest[0]}"
    ctl transfer-leader "${rest[0]}" >/dev/null
  fi
  ctl remove-member "$id" >/dev/null
  remote "$id" "systemctl disable --now chatnode"
  sed -i -E "/^${id}[[:space:]]/d" "$hosts_file"
  ids=("${rest[@]}")
  for other in "${ids[@]}"; do reconfigure "$other"; done
  wait_healthy "${ids[@]}"
  say "node $id removed; its data stays in /var/lib/chat on ${reach[$id]}"
  ctl status
}

cmd_down() {
  load_hosts "$1"
  stop_all
}

# backup FILE [ID]: the leader by default, which has applied every write it acknowledged;
# a follower's copy holds what it has applied, which may trail that by a moment.
cmd_backup() {
  load_hosts "$1"
  local file="${2:?usage: backup HOSTS_FILE FILE [ID]}" id="${3:-}"
  [ -n "$id" ] || id="$(leader_id)"
  [ -n "${address[$id]+x}" ] || die "node $id is not in $hosts_file"
  [ ! -e "$file" ] || die "$file exists; choose another name"
  remote "$id" 'set -e; t=$(mktemp -d); trap "rm -rf $t" EXIT
    chatctl backup --data-dir /var/lib/chat "$t/backup.db" >&2; cat "$t/backup.db"' >"$file.partial" \
    || { rm -f "$file.partial"; die "node $id: backup failed"; }
  mv "$file.partial" "$file"
  say "node $id: backed up to $file"
}

# restore: the first machine in HOSTS_FILE starts alone from the file (a new cluster
# of one; chatctl restore takes a backup or a `chatctl snapshot save` file), then every
# other machine joins it empty, one at a time. Every node's old data
# is moved aside to /var/lib/chat.before-restore-TIME first, never deleted.
cmd_restore() {
  load_hosts "$1"
  local file="${2:?usage: restore HOSTS_FILE FILE}"
  [ -f "$file" ] || die "no backup file $file"
  local all=("${ids[@]}") first="${ids[0]}" stamp id
  stamp="$(date +%Y%m%d%H%M%S)"
  stop_all
  for id in "${all[@]}"; do
    remote "$id" "[ ! -d /var/lib/chat ] || mv /var/lib/chat /var/lib/chat.before-restore-$stamp"
  done
  remote "$first" "cat >/var/tmp/chat-restore.db" <"$file"
  remote "$first" "set -e; install -d -o chat -g chat -m 0750 /var/lib/chat
    runuser -u chat -- /opt/chat/.venv/bin/chatctl restore /var/tmp/chat-restore.db \
      --data-dir /var/lib/chat --id $first --address ${address[$first]}
    rm -f /var/tmp/chat-restore.db"
  ids=("$first")
  remote "$first" "bash /opt/chat/deploy/install.sh --config-only --id $first --cluster $(spec) \
    --min-insync 1" >/dev/null
  remote "$first" "systemctl enable --now chatnode"
  wait_healthy "$first"
  say "node $first: restored from $file"
  for id in "${all[@]:1}"; do ids+=("$id"); join_node "$id"; done
  for id in "${ids[@]}"; do reconfigure "$id"; done
  ctl status
}

cmd_signal() {
  load_hosts "$1"
  local id="${2:?usage: signal HOSTS_FILE ID SIGNAL|start}" what="${3:?}"
  [ -n "${address[$id]+x}" ] || die "node $id is not in $hosts_file"
  case "$what" in
    start) remote "$id" "systemctl start chatnode" ;;
    *) remote "$id" "systemctl kill -s $what chatnode" ;;
  esac
}

verb="${1:-}"
[ $# -ge 2 ] || usage
shift
case "$verb" in
  check) cmd_check "$@" ;;
  up) cmd_up "$@" ;;
  status) cmd_status "$@" ;;
  upgrade) cmd_upgrade "$@" ;;
  add) cmd_add "$@" ;;
  remove) cmd_remove "$@" ;;
  down) cmd_down "$@" ;;
  backup) cmd_backup "$@" ;;
  restore) cmd_restore "$@" ;;
  signal) cmd_signal "$@" ;;
  *) usage ;;
esac
