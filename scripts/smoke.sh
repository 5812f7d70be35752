#!/usr/bin/env bash
# A deployed Tally, tried end to end: like, read, unlike, grant, spend, each
# checked against what it must answer. Safe to run again and again: it likes a
# post of its own and spends exactly what it grants.
#
#   make smoke URL=https://abc123.execute-api.eu-west-1.amazonaws.com TOKEN=eyJ...
#
# TOKEN is a JWT your issuer signed for the stack's JwtAudience, with the
# `points:admin` scope (the grant needs it). Against `make dev`, any token's
# claims are read unchecked: TOKEN="$(scripts/dev-token.py smoke-user points:admin)".
set -euo pipefail
url="${1:-}"
token="${2:-}"
if [ -z "$url" ] || [ -z "$token" ]; then
  echo "usage: make smoke URL=<the stack's ApiUrl> TOKEN=<a JWT with the points:admin scope>" >&2
  exit 2
fi
url="${url%/}"
sub="$(python3 -c '
import base64, json, sys
payload = sys.argv[1].split(".")[1]
print(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])
' "$token")" || { echo "smoke: TOKEN is not a JWT with a sub claim" >&2; exit 2; }
run="smoke-$(date +%s)-$RANDOM"
failures=0

# call METHOD PATH [curl arguments...]: sets $status and $body.
call() {
  local method="$1" path="$2"
  shift 2
  local out
  out="$(curl --noproxy '127.0.0.1,localhost' -sS -X "$method" -H "Authorization: Bearer $token" \
    -w '\n%{http_code}' "$@" "$url$path")" || { status=000; body="curl failed"; return; }
  status="${out##*$'\n'}"
  body="${out%$'\n'*}"
}

# expect WHAT STATUS [TEXT]: the last call answered STATUS, its body holding TEXT.
expect() {
  if [ "$status" = "$2" ] && [[ "$body" == *"${3:-}"* ]]; then
    echo "ok   $1"
  else
    echo "FAIL $1: expected $2 ${3:+with $3 }, got $status $body"
    failures=$((failures + 1))
  fi
}

# until_answers WHAT PATH TEXT: polls a read (eventually consistent) for up to 30 s.
until_answers() {
  for _ in $(seq 1 60); do
    call GET "$2"
    if [ "$status" = 200 ] && [[ "$body" == *"$3"* ]]; then break; fi
    sleep 0.5
  done
  expect "$1" 200 "$3"
}

echo "smoke: $url as $sub (run $run)"
call PUT "/v1/posts/$run/like"
expect "like $run" 202 '"status":"accepted"'
until_answers "the like is counted" "/v1/posts/$run/likes" '"count":1'
until_answers "the liker is listed" "/v1/posts/$run/likers" "\"user_id\":\"$sub\""
call GET "/v1/me/likes?post_ids=$run"
expect "did I like it" 200 "\"$run\":true"
call DELETE "/v1/posts/$run/like"
expect "unlike $run" 202 '"status":"accepted"'
until_answers "the unlike is counted" "/v1/posts/$run/likes" '"count":0'

call POST /v1/points/grants -H "Idempotency-Key: $run-grant" \
  -d "{\"user_id\":\"$sub\",\"amount\":10,\"point_type\":\"bonus\",\"description\":\"smoke test\"}"
expect "grant 10 bonus points" 202 '"status":"pending"'
until_answers "the grant applies" "/v1/me/points/operations/$run-grant" '"status":"applied"'
call POST /v1/me/points/spend -H "Idempotency-Key: $run-spend" -d '{"amount":10,"description":"smoke test"}'
expect "spend them" 202 '"operation_id"'
until_answers "the spend applies" "/v1/me/points/operations/$run-spend" '"status":"applied"'
call POST /v1/me/points/spend -H "Idempotency-Key: $run-spend" -d '{"amount":10,"description":"smoke test"}'
expect "the same spend again answers its status, applied once" 202 '"status":"applied"'
call GET /v1/me/points
expect "the balance reads" 200 '"available":'
call GET /v1/no-such-route
expect "an unknown route is a problem" 404 '"code":"not_found"'

if [ "$failures" -gt 0 ]; then
  echo "smoke: $failures checks failed"
  exit 1
fi
echo "smoke: every check passed"
