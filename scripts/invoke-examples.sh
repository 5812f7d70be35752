#!/usr/bin/env bash
# `cargo lambda watch` runs every function locally; `cargo lambda invoke`
# sends it each example event in events/ and this script checks the answers.
# Needs the emulator: run it as `make invoke-examples`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/venv.sh
export PATH="$root/.venv/bin:$PATH"
mkdir -p .tally
env_file=".tally/lambda-$$.env"
# The workspace build `make test` made (one set of features: no second SDK build).
cargo build -q --workspace --all-targets
target/debug/dev-gateway provision >"$env_file"
{
  echo "AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}"
  echo "AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}"
  echo "AWS_REGION=${AWS_REGION:-us-east-1}"
} >>"$env_file"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cargo lambda watch --invoke-port "$port" --env-file "$env_file" >".tally/watch-$$.log" 2>&1 &
watch=$!
trap 'kill $watch 2>/dev/null; rm -f "$env_file" ".tally/event-$$.json"' EXIT

failures=0
# The examples were accepted on 2026-11-21; the worker refuses messages accepted
# more than 15 days ago, so each is sent as if accepted yesterday.
yesterday="$(date -u -d yesterday +%F)"
fresh() { # event -> path of a copy dated yesterday
  sed "s/2026-11-21T/${yesterday}T/g" "events/$1" >".tally/event-$$.json"
  echo ".tally/event-$$.json"
}
invoke() { # function event expected-substring
  local out
  for _ in $(seq 1 120); do # the first invoke of a function compiles it
    if out="$(cargo lambda invoke "$1" --invoke-port "$port" --data-file "$(fresh "$2")" 2>&1)"; then break; fi
    sleep 1
  done
  if grep -qF -- "$3" <<<"$out"; then
    echo "ok   $1 < events/$2"
  else
    echo "FAIL $1 < events/$2: expected $3 in: $out"
    failures=$((failures + 1))
  fi
}

invoke like like-put.json '"statusCode":202'
invoke like like-delete.json '"statusCode":202'
invoke like like-count.json '"statusCode":200'
invoke like like-counts.json '"statusCode":200'
invoke like like-did-i-like.json '"statusCode":200'
invoke like like-my-likes.json '"statusCode":200'
invoke points points-grant.json '"statusCode":202'
invoke points points-spend.json '"statusCode":202'
invoke points points-transfer.json '"statusCode":202'
invoke points points-balance.json '"statusCode":200'
invoke points points-history.json '"statusCode":200'
invoke points points-operation.json '"statusCode":200'
invoke sqs-worker sqs-worker-likes.json '"batchItemFailures":[]'
invoke sqs-worker sqs-worker-points.json '"batchItemFailures":[]'
invoke reconcile reconcile-schedule.json '"mismatches":0'
exit "$failures"
