#!/usr/bin/env bash
# Runs the real CNCF distribution registry (Debian's docker-registry) on loopback for the demo, benchmarks
# and manual testing, with its own config (no auth, deletes enabled) instead of the packaged service's.
#
# Usage: scripts/registry.sh start|stop|status [--port 5000] [--dir DIR]
#   DIR (default REPO/.work/registry) holds config.yml, data/ (the storage), registry.pid and registry.log.
#
# `start` refuses to run when another process already listens on the port (for instance the packaged
# service with htpasswd auth on :5000), so nothing ever talks to the wrong registry by accident.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(git -C "$here" rev-parse --show-toplevel 2>/dev/null || (cd "$here/.." && pwd))

cmd=${1:-}
[[ $cmd =~ ^(start|stop|status)$ ]] || { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "${BASH_SOURCE[0]}" >&2; exit 2; }
shift
port=5000
dir=$repo/.work/registry
while (($#)); do
  case "$1" in
    --port) port=$2; shift ;;
    --port=*) port=${1#*=} ;;
    --dir) dir=$2; shift ;;
    --dir=*) dir=${1#*=} ;;
    *) echo "registry.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ $port =~ ^[0-9]+$ ]] || { echo "registry.sh: bad port '$port'" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pidfile=$dir/registry.pid
logfile=$dir/registry.log
config=$dir/config.yml
url=http://127.0.0.1:$port

# pid of our registry if it is running (pid file names a live docker-registry serving our config)
our_pid() {
  [[ -f $pidfile ]] || return 1
  local pid
  pid=$(cat "$pidfile")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "docker-registry serve $config" || return 1
  echo "$pid"
}

# pids listening on the port (any address), from ss
listeners() {
  ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u
}

v2_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url/v2/" 2>/dev/null || true; }

case "$cmd" in
  start)
    if pid=$(our_pid); then
      if [[ $(v2_status) == 200 ]]; then
        echo "registry: already running at $url (pid $pid, storage $dir/data)"
        exit 0
      fi
      echo "registry.sh: our registry (pid $pid) does not answer at $url; restarting it" >&2
      kill "$pid" 2>/dev/null || true
      sleep 0.5
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
    foreign=$(listeners || true)
    if [[ -n $foreign ]] || [[ $(v2_status) != 000 ]]; then
      echo "registry.sh: port $port is already in use by another process:" >&2
      for p in $foreign; do echo "  pid $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" >&2; done
      echo "  This is not the registry started by this script. If it is Debian's docker-registry service" >&2
      echo "  (htpasswd auth), stop it with 'bash setup.sh' or 'systemctl stop docker-registry'; otherwise" >&2
      echo "  pick another port with --port." >&2
      exit 1
    fi
    command -v docker-registry >/dev/null || { echo "registry.sh: docker-registry not installed: run setup.sh" >&2; exit 1; }
    mkdir -p "$dir/data"
    cat >"$config" <<EOF
# written by scripts/registry.sh
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    setsid docker-registry serve "$config" >"$logfile" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$pidfile"
    for _ in $(seq 1 100); do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "registry.sh: docker-registry exited at start; last log lines:" >&2
        tail -5 "$logfile" >&2
        rm -f "$pidfile"
        exit 1
      fi
      if [[ $(v2_status) == 200 ]]; then
        if ! listeners | grep -qx "$pid"; then
          echo "registry.sh: $url answers but the listener is not pid $pid; stopping ours" >&2
          kill "$pid" 2>/dev/null || true
          rm -f "$pidfile"
          exit 1
        fi
        echo "registry: running at $url (pid $pid, storage $dir/data, log $logfile)"
        exit 0
      fi
      sleep 0.1
    done
    echo "registry.sh: $url/v2/ did not answer within 10s; see $logfile" >&2
    kill "$pid" 2>/dev/null || true
    rm -f "$pidfile"
    exit 1
    ;;
  stop)
    if ! pid=$(our_pid); then
      rm -f "$pidfile"
      echo "registry: not running (no live pid in $pidfile)"
      exit 0
    fi
    kill "$pid"
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$pidfile"
    echo "registry: stopped (pid $pid)"
    ;;
  status)
    if pid=$(our_pid) && [[ $(v2_status) == 200 ]]; then
      echo "registry: running at $url (pid $pid, storage $dir/data)"
      curl -s --max-time 5 "$url/v2/_catalog" | jq -c . 2>/dev/null || true
    else
      echo "registry: not running at $url"
      foreign=$(listeners || true)
      [[ -n $foreign ]] && echo "  (port $port is used by another process: pid $foreign)"
      exit 1
    fi
    ;;
esac
