#!/usr/bin/env bash
# `cargo lambda watch` runs every function locally; `cargo lambda invoke`
# sends it each example event in events/ and this script checks the answers.
# Needs the emulator: run it as `make invoke-examples`.
# Every wait is bounded: a function that never answers fails this script with
# the watch's log, never hangs it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/venv.sh
export PATH="$root/.venv/bin:$PATH"
mkdir -p .tally
env_file=".tally/lambda-$$.env"
watch_log=".tally/watch-$$.log"
# The workspace build `make test` made (for the dev gateway's provisioning).
cargo build -q --workspace --all-targets
# Each function as `cargo lambda watch` builds it (`cargo run --bin <function>`:
# that package's own features, not the workspace's): built here, so that a build
# error fails this script at once and no invoke waits on a compile.
functions=(like points sqs-worker reconcile)
for function in "${functions[@]}"; do
  cargo build -q --bin "$function"
done
timeout 120 target/debug/dev-gateway provision >"$env_file"
{
  echo "NO_PROXY=${NO_PROXY:-}" # scripts/with-emulator.sh names the local hosts
  echo "no_proxy=${no_proxy:-}"
  # The functions sign as the operator here (one env file for all of them);
  # `make dev` and the tests give each its own role.
  echo "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
  echo "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
  echo "AWS_REGION=${AWS_REGION:-us-east-1}"
} >>"$env_file"
address=127.0.0.1
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# --ignore-changes: nothing here edits the code, so no file watcher and no reload.
cargo lambda watch --ignore-changes --invoke-address "$address" --invoke-port "$port" \
  --env-file "$env_file" >"$watch_log" 2>&1 &
watch=$!
trap 'kill $watch 2>/dev/null; rm -f "$env_file" ".tally/event-$$.json"' EXIT

show_watch_log() {
  echo "--- last lines of $watch_log:"
  tail -n 40 "$watch_log"
}
listening=false
for _ in $(seq 1 60); do
  if ! kill -0 "$watch" 2>/dev/null; then break; fi
  if (exec 3<>"/dev/tcp/$address/$port") 2>/dev/null; then
    listening=true
    break
  fi
  sleep 1
done
if [ "$listening" != true ]; then
  echo "FAIL cargo lambda watch is not listening on $address:$port"
  show_watch_log
  exit 1
fi

failures=0
stuck=false # once one invoke got no answer, the others would queue behind it
# The examples were accepted on 2026-11-21; the worker refuses messages accepted
# more than 15 days ago, so each is sent as if accepted yesterday.
yesterday="$(date -u -d yesterday +%F)"
fresh() { # event -> path of a copy dated yesterday
  sed "s/2026-11-21T/${yesterday}T/g" "events/$1" >".tally/event-$$.json"
  echo ".tally/event-$$.json"
}
invoke() { # function event expected-substring
  local out status=0
  if [ "$stuck" = true ]; then
    echo "FAIL $1 < events/$2: not sent, an earlier invoke got no answer"
    failures=$((failures + 1))
    return
  fi
  # The first invoke of a function starts it (`cargo run`, already built): 180 s
  # is ample, and an answer that never comes is a failure, not a hang.
  out="$(timeout 180 cargo lambda invoke "$1" --invoke-address "$address" --invoke-port "$port" \
    --data-file "$(fresh "$2")" 2>&1)" || status=$?
  if [ "$status" -eq 124 ]; then
    stuck=true
    out="no answer within 180 s: $out"
  fi
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
invoke like like-likers.json '"statusCode":200'
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
if [ "$failures" -gt 0 ]; then show_watch_log; fi
exit "$failures"
