# Helpers for the service scripts beside this file (see README.md). Source it.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

: "${IMGPIPE_SERVICES_DIR:?set by scripts/test: the scratch folder for service data, pid and env files}"

# A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for_tcp PORT SECONDS: returns once something accepts connections on 127.0.0.1:PORT; fails after SECONDS.
wait_for_tcp() {
  local port=$1 deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# stop_pidfile FILE [GRACE_SECONDS]: TERM the process named in FILE, KILL it if still there after the grace period.
stop_pidfile() {
  local file=$1 grace=${2:-20} pid
  [[ -f $file ]] || return 0
  pid=$(<"$file")
  if kill -TERM "$pid" 2>/dev/null; then
    local deadline=$((SECONDS + grace))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}
