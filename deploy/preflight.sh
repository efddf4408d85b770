# shellcheck shell=bash disable=SC2154  # ids, repo and the helpers are cluster.sh's
# `deploy/cluster.sh check HOSTS_FILE`: is every machine ready for `up`? Sourced by
# cluster.sh. One line per check and machine, `node ID: PASS|FAIL WHAT: WHY`; the exit
# status is 0 only when every check passes. Nothing on the machines is changed.
#
# ssh       the machine answers within CHECK_TIMEOUT_S (ssh's ConnectTimeout bounds the
#           connection, `timeout` the whole command), and with a non-root ssh user
#           `sudo -n true` works: every other verb runs its commands through sudo -n.
# python    python3 3.11 or later makes a virtualenv with pip (machine-check.sh).
# disk      MIN_FREE_MIB free where /var/lib/chat is (machine-check.sh).
# port      each of the node's ports (node_ports) free (machine-check.sh).
# clock     the machine's wall clock within MAX_CLOCK_OFFSET_S of this one's.

CHECK_TIMEOUT_S="${CHAT_CHECK_TIMEOUT_S:-60}"
# The data folder holds the log and state databases, their WAL files, and a whole second
# copy of the state while a snapshot is received or a backup is made; a full disk stops
# the node's writes. 1 GiB is a floor for a new machine, not a sizing: size the disk for
# twice the state you expect.
MIN_FREE_MIB=1024
# The cluster stays correct with clocks apart (leases count elapsed time on each node's
# own clock, and chat time is the cluster clock carried in the log), but a leader whose
# wall clock is behind holds that time still until it catches up, the nodes warn about a
# member over 1 s off, and logs and metrics from several machines are read by their
# timestamps. The same 1 s as the nodes' warning.
MAX_CLOCK_OFFSET_S=1

cmd_check() {
  load_hosts "$1"
  ssh_cmd=(timeout "$CHECK_TIMEOUT_S" "${ssh_cmd[@]}")
  local tmp id pids=() failed=0 i
  tmp="$(mktemp -d)"
  for id in "${ids[@]}"; do
    check_machine "$id" >"$tmp/$id" 2>&1 &
    pids+=($!)
  done
  for i in "${!ids[@]}"; do
    wait "${pids[$i]}" || failed=1
    cat "$tmp/${ids[$i]}"
  done
  rm -rf "$tmp"
  return "$failed"
}

# check_machine ID: node ID's lines; fails when any check does.
check_machine() {
  local id="$1" user out rc=0 as=login bad=0
  user="$(login "$id" 'id -un' 2>&1)" || rc=$?
  if [ "$rc" != 0 ]; then
    [ "$rc" = 124 ] && user="no answer in ${CHECK_TIMEOUT_S}s"
    [ -n "$user" ] || user="ssh exited $rc"
    verdict "$id" FAIL "ssh: cannot run a command as $(target "$id") (${user##*$'\n'}); nothing else checked"
    return 1
  fi
  verdict "$id" PASS "ssh: $(target "$id") logs in as $user"
  if [ "$user" = root ]; then
    as=remote
  elif out="$(login "$id" 'sudo -n true' 2>&1)"; then
    verdict "$id" PASS "sudo: $user runs commands as root with sudo -n"
    as=remote
  else
    verdict "$id" FAIL "sudo: $user cannot use sudo -n (${out##*$'\n'}); cluster.sh needs passwordless sudo for a non-root ssh user"
  fi
  out="$("$as" "$id" "sh -s -- /var/lib/chat $MIN_FREE_MIB $(node_ports "$id")" \
    <"$repo/deploy/machine-check.sh" 2>&1)" || true
  local line
  while IFS= read -r line; do
    case "$line" in
      PASS\ *) verdict "$id" PASS "${line#PASS }" ;;
      FAIL\ *) verdict "$id" FAIL "${line#FAIL }" ;;
      *) verdict "$id" FAIL "checks: ${line:-no output}" ;;
    esac
  done <<<"$out"
  check_clock "$id"
  return "$bad"
}

# check_clock ID: the machine's wall clock against this one's, taking its reading to be
# of the ssh round trip's middle (so off by at most half the round trip).
check_clock() {
  local t0 t1 theirs
  t0="$(date +%s.%N)"
  theirs="$(login "$1" 'date +%s.%N' 2>&1)" || { verdict "$1" FAIL "clock: cannot read it ($theirs)"; return; }
  t1="$(date +%s.%N)"
  local line
  line="$(awk -v a="$t0" -v b="$t1" -v r="$theirs" -v max="$MAX_CLOCK_OFFSET_S" 'BEGIN {
    off = r - (a + b) / 2; half = (b - a) / 2
    printf "%s clock: %+.3f s from this machine'\''s (within %.3f s; at most %s s)\n", \
      (off > max || off < -max) ? "FAIL" : "PASS", off, half, max }')"
  verdict "$1" "${line%% *}" "${line#* }"
}

# verdict ID PASS|FAIL TEXT: one line; a FAIL marks the machine's check as failed.
verdict() {
  echo "node $1: $2 $3"
  [ "$2" = PASS ] || bad=1
}
