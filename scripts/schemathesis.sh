#!/usr/bin/env bash
# Holds the running service to openapi.yaml: starts the dev gateway on a free
# port, with a table and queues of its own, and runs schemathesis against it
# through the document. Fails on any 5xx and on any response the document does
# not allow (status, content type, body, headers).
#
# Needs the emulator and a built gateway: run it as `make test-schemathesis`
# (scripts/with-emulator.sh, after `cargo build -p dev-gateway`).
#   TALLY_SCHEMATHESIS_EXAMPLES  examples per operation and phase (default 100)
#   TALLY_SCHEMATHESIS_SEED      the seed, for a reproducible run (default 1)
#   extra arguments go to `schemathesis run` (e.g. --include-operation-id spendPoints)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if [ -z "${AWS_ENDPOINT_URL:-}" ]; then
  echo "schemathesis: AWS_ENDPOINT_URL is not set; run through scripts/with-emulator.sh (make test-schemathesis)" >&2
  exit 2
fi
gateway="${CARGO_TARGET_DIR:-$root/target}/debug/dev-gateway"
if [ ! -x "$gateway" ]; then
  echo "schemathesis: $gateway is missing; run cargo build -p dev-gateway first" >&2
  exit 2
fi
scripts/venv.sh
mkdir -p .tally

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
suffix="$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
log=".tally/schemathesis-gateway-$port.log"
url="http://127.0.0.1:$port"

# A table and queues of this run's own, so other tests on the same emulator never see them.
TALLY_DEV_ADDR="127.0.0.1:$port" \
  TALLY_STACK_NAME="tally-schemathesis-$suffix" \
  RUST_LOG="${RUST_LOG:-warn}" \
  "$gateway" >"$log" 2>&1 &
pid=$!
stop_gateway() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap stop_gateway EXIT
trap 'exit 130' INT TERM

# Up once it answers anything (a request without identity is a 401).
for _ in $(seq 1 300); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "schemathesis: the dev gateway exited; its log ($log):" >&2
    cat "$log" >&2
    exit 1
  fi
  code="$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/me/points" 2>/dev/null || true)"
  if [ "$code" != "000" ] && [ -n "$code" ]; then
    break
  fi
  sleep 0.1
done
if [ "${code:-000}" = "000" ]; then
  echo "schemathesis: the dev gateway did not answer on $url; its log ($log):" >&2
  cat "$log" >&2
  exit 1
fi
echo "schemathesis: dev gateway on $url (pid $pid, log $log)" >&2

# No crash cache (.schemathesis/): it would replay an earlier run's requests into this one.
config="$(mktemp)"
trap 'stop_gateway; rm -f "$config"' EXIT
printf '[cache]\nenabled = false\n' >"$config"

# X-Dev-User / X-Dev-Scopes stand in for the JWT (see openapi.yaml's `jwt`
# scheme); with points:admin the admin route is exercised past its 403.
# The checks: no 5xx, and every status, content type, body and header as the
# document says. A fixed seed makes a failure reproducible.
status=0
.venv/bin/schemathesis --config-file "$config" run openapi.yaml \
  --url "$url" \
  --header 'X-Dev-User: alice' \
  --header 'X-Dev-Scopes: points:admin' \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection \
  --max-examples "${TALLY_SCHEMATHESIS_EXAMPLES:-100}" \
  --seed "${TALLY_SCHEMATHESIS_SEED:-1}" \
  --generation-database none \
  --generation-with-security-parameters false \
  --request-timeout 10 \
  --output-sanitize false \
  --no-color \
  "$@" || status=$?

# What the worker made of the accepted writes is not schemathesis's to judge,
# but say so when the gateway logged trouble.
if sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -Eq ' (ERROR|WARN) '; then
  echo "schemathesis: the dev gateway logged warnings or errors ($log):" >&2
  sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E ' (ERROR|WARN) ' | head -20 >&2
elif [ "$status" -eq 0 ]; then
  rm -f "$log"
fi
exit "$status"
