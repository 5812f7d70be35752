#!/usr/bin/env bash
# The local AWS emulator (moto server), on a free port of 127.0.0.1.
#
#   eval "$(scripts/emulator.sh start)"   starts one; exports AWS_ENDPOINT_URL,
#                                         the operator's keys and TALLY_EMULATOR_PID
#   scripts/emulator.sh stop              stops the one TALLY_EMULATOR_PID names
#
# The emulator enforces IAM. Its operator (allowed everything) has keys of its
# own, written to .tally/emulator-<port>.env and, for the AWS CLI and scripts,
# to .tally/operator.env (or the file TALLY_OPERATOR_ENV names; "none": not
# copied, as `make test` does so it never replaces the keys of a `make dev`).
#
# Each start gets its own port, log and keys (.tally/emulator-<port>.*), so
# `make dev` and `make test` can run side by side.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
state="$root/.tally"
mkdir -p "$state"

case "${1:-}" in
  start)
    "$root/scripts/venv.sh"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    log="$state/emulator-$port.log"
    keys="$state/emulator-$port.env"
    rm -f "$keys"
    "$root/.venv/bin/python" "$root/scripts/moto_server.py" -H 127.0.0.1 -p "$port" --operator-env "$keys" >"$log" 2>&1 &
    pid=$!
    trap 'kill "$pid" 2>/dev/null || true' ERR  # a failed start leaves nothing running
    for _ in $(seq 1 100); do
      if [ -s "$keys" ] && curl --noproxy '*' -fsS -o /dev/null "http://127.0.0.1:$port/moto-api/" 2>/dev/null; then
        operator_env="${TALLY_OPERATOR_ENV:-$state/operator.env}"
        if [ "$operator_env" != none ]; then
          cp "$keys" "$operator_env"
          echo "emulator: the operator's keys are in ${operator_env#"$root/"}" >&2
        fi
        echo "emulator: moto server on http://127.0.0.1:$port (pid $pid, log ${log#"$root/"})" >&2
        echo "export TALLY_EMULATOR_PID=$pid"
        sed 's/^/export /' "$keys"
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
