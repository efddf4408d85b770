#!/bin/sh
# The checks `deploy/cluster.sh check` makes on one machine, run there (cluster.sh sends
# this file over ssh to `sh -s`; it also runs alone):
#   sh deploy/machine-check.sh DATA_DIR MIN_FREE_MIB PORT...
# One line per check, `PASS WHAT: WHY` or `FAIL WHAT: WHY`. It changes nothing but a
# temporary folder it removes. Run as root it also names who holds a taken port.
set -u
data_dir=$1 min_free_mib=$2
shift 2

# python3 as install.sh uses it: 3.11 or later, and `python3 -m venv` must give a venv
# with pip (ensurepip; Debian ships it apart, as python3-venv), so it is tried for real.
check_python() {
  version=$(python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>&1) || {
    echo "FAIL python: no python3 on the PATH ($version)"; return; }
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "FAIL python: python3 is $version; the node needs 3.11 or later"; return; }
  tmp=$(mktemp -d) || { echo "FAIL python: cannot make a temporary folder to try venv in"; return; }
  if python3 -m venv "$tmp/venv" >"$tmp/log" 2>&1 && "$tmp/venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "PASS python: python3 $version makes a virtualenv with pip"
  else
    echo "FAIL python: python3 $version cannot make a virtualenv with pip ($(grep -m1 . "$tmp/log")); Debian: apt-get install python3-venv"
  fi
  rm -rf "$tmp"
}

# Free space on the filesystem that holds (or will hold) the data folder.
check_disk() {
  dir=$data_dir
  while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
  free_kib=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
  free=$(awk -v k="$free_kib" 'BEGIN { printf "%.1f GiB", k / 1048576 }')
  want=$(awk -v m="$min_free_mib" 'BEGIN { printf "%.1f GiB", m / 1024 }')
  if [ "$free_kib" -ge $((min_free_mib * 1024)) ]; then
    echo "PASS disk: $free free at $dir (wants $want for $data_dir)"
  else
    echo "FAIL disk: only $free free at $dir (wants $want for $data_dir)"
  fi
}

# A port is free when a listening socket can take it on every address, as the node will.
# One held by this machine's own chatnode (a re-check of a deployed machine) is fine.
check_port() {
  port=$1
  command -v python3 >/dev/null || { echo "FAIL port $port: cannot try it without python3"; return; }
  if python3 - "$port" 2>/dev/null <<'PY'
import socket, sys
with socket.socket(socket.AF_INET6 if socket.has_dualstack_ipv6() else socket.AF_INET) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", int(sys.argv[1])))
    s.listen()
PY
  then
    echo "PASS port $port: free"; return
  fi
  holder=$(ss -Htlnp "sport = :$port" 2>/dev/null | grep -o 'users:(.*)' | head -1)
  main=$(systemctl show -p MainPID --value chatnode 2>/dev/null || true)
  case "$holder" in
    *"pid=${main:-none},"*) echo "PASS port $port: held by this machine's running chatnode" ;;
    '') echo "FAIL port $port: in use" ;;
    *) echo "FAIL port $port: in use by $holder" ;;
  esac
}

check_python
check_disk
for port in "$@"; do check_port "$port"; done
