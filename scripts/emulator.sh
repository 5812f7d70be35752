#!/usr/bin/env bash
# The local AWS emulator (moto server), on a free port of 127.0.0.1.
#
#   scripts/emulator.sh start   starts it; prints `export ...` lines to eval
#   scripts/emulator.sh stop    stops the one `start` started
#
# State lives in .tally/ (pid and port), so start/stop pair up across shells.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="$root/.tally"
mkdir -p "$state"

case "${1:-}" in
  start)
    "$root/scripts/venv.sh"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    "$root/.venv/bin/python" "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$port" >"$state/emulator.log" 2>&1 &
    echo $! >"$state/emulator.pid"
    for _ in $(seq 1 100); do
      if curl -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null; then
        echo "emulator: moto server on http://127.0.0.1:$port (pid $(cat "$state/emulator.pid"), log .tally/emulator.log)" >&2
        echo "export AWS_ENDPOINT_URL=http://127.0.0.1:$port"
        echo "export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}"
        echo "export AWS_REGION=${AWS_REGION:-us-east-1}"
        exit 0
      fi
      sleep 0.1
    done
    echo "emulator: moto server did not come up; see .tally/emulator.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$state/emulator.pid" ]; then
      kill "$(cat "$state/emulator.pid")" 2>/dev/null || true
      rm -f "$state/emulator.pid"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
