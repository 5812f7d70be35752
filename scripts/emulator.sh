#!/usr/bin/env bash
# The local AWS emulator (moto server), on a free port of 127.0.0.1.
#
#   eval "$(scripts/emulator.sh start)"   starts one; exports AWS_ENDPOINT_URL,
#                                         test credentials and TALLY_EMULATOR_PID
#   scripts/emulator.sh stop              stops the one TALLY_EMULATOR_PID names
#
# Each start gets its own port and log (.tally/emulator-<port>.log), so `make dev`
# and `make test` can run side by side.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="$root/.tally"
mkdir -p "$state"

case "${1:-}" in
  start)
    "$root/scripts/venv.sh"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    log="$state/emulator-$port.log"
    "$root/.venv/bin/python" "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      if curl --noproxy '*' -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null; then
        echo "emulator: moto server on http://127.0.0.1:$port (pid $pid, log ${log#"$root/"})" >&2
        echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$port TALLY_EMULATOR_PID=$pid"
        echo "export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}"
        echo "export AWS_REGION=${AWS_REGION:-us-east-1}"
        exit 0
      fi
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    echo "emulator: moto server did not come up; see $log" >&2
    exit 1
    ;;
  stop)
    if [ -n "${TALLY_EMULATOR_PID:-}" ]; then
      kill "$TALLY_EMULATOR_PID" 2>/dev/null || true
      # moto finishes the request in hand before it exits; a long one (a
      # transaction copying a big table) gets two seconds, then SIGKILL.
      for _ in $(seq 1 20); do
        kill -0 "$TALLY_EMULATOR_PID" 2>/dev/null || exit 0
        sleep 0.1
      done
      kill -9 "$TALLY_EMULATOR_PID" 2>/dev/null || true
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
