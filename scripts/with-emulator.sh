#!/usr/bin/env bash
# Runs a command against the emulator: the one AWS_ENDPOINT_URL names if it
# answers, otherwise a fresh one that is stopped when the command ends.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${AWS_ENDPOINT_URL:-}" ] && curl -fsS -o /dev/null "$AWS_ENDPOINT_URL/moto-api/" 2>/dev/null; then
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  exec "$@"
fi
eval "$("$root/scripts/emulator.sh" start)"
trap '"$root/scripts/emulator.sh" stop' EXIT
trap 'exit 130' INT TERM
"$@"
