#!/usr/bin/env bash
# Runs a command against the emulator: the one AWS_ENDPOINT_URL names if it
# answers, otherwise a fresh one that is stopped when the command ends.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# The emulator, the dev gateway and `cargo lambda watch` are on this machine: a
# proxy the shell names (HTTP_PROXY, as on many company laptops) is not for them.
local_hosts="127.0.0.1,localhost,::1"
export NO_PROXY="$local_hosts${NO_PROXY:+,$NO_PROXY}" no_proxy="$local_hosts${no_proxy:+,$no_proxy}"
# An emulator already named (CI starts one) comes with its operator's keys in
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
if [ -n "${AWS_ENDPOINT_URL:-}" ] && curl -fsS -o /dev/null "$AWS_ENDPOINT_URL/moto-api/" 2>/dev/null; then
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  exec "$@"
fi
# Only `make dev` (TALLY_OPERATOR_ENV=.tally/operator.env) hands its keys to the shell.
# (`eval "$(...)"` would go on when the start fails: never run without the emulator.)
started="$(TALLY_OPERATOR_ENV="${TALLY_OPERATOR_ENV:-none}" "$root/scripts/emulator.sh" start)" || exit 1
eval "$started"
trap '"$root/scripts/emulator.sh" stop' EXIT
trap 'exit 130' INT TERM
"$@"
