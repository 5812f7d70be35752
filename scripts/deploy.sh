#!/usr/bin/env bash
# `make deploy`: sam deploy without questions, its parameters from a file.
#   scripts/deploy.sh PARAMS STACK
# PARAMS holds one Key=Value a line (# comments and blank lines skipped); a
# key with no value is left out, so the template's default applies. Values are
# passed as they are written, one argument each: quote one that holds spaces
# (ReconcileSchedule="rate(10 minutes)").
set -euo pipefail
params="${1:?usage: scripts/deploy.sh PARAMS STACK}"
stack="${2:?usage: scripts/deploy.sh PARAMS STACK}"
if [ ! -f "$params" ]; then
  echo "deploy: $params is missing: copy deploy/production.params (or deploy/trial.params) there and fill it in" >&2
  exit 2
fi
overrides=()
while IFS= read -r line || [ -n "$line" ]; do
  line="${line#"${line%%[![:space:]]*}"}"   # leading blanks
  line="${line%"${line##*[![:space:]]}"}"   # trailing blanks
  case "$line" in
    '' | '#'*) continue ;;
    *=) continue ;;                          # no value: the template's default
    *=*) overrides+=("$line") ;;
    *) echo "deploy: $params: not Key=Value: $line" >&2; exit 2 ;;
  esac
done <"$params"
exec sam deploy --stack-name "$stack" --no-confirm-changeset --parameter-overrides "${overrides[@]}"
