#!/usr/bin/env bash
# Creates .venv with the pinned Python tools, unless it already matches
# scripts/requirements.txt. Prints nothing on success when up to date.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.requirements"
if [ -x "$venv/bin/moto_server" ] && cmp -s "$root/scripts/requirements.txt" "$stamp"; then
  exit 0
fi
echo "venv: installing $(grep -v '^#' "$root/scripts/requirements.txt" | tr '\n' ' ')" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip >&2
"$venv/bin/pip" install --quiet -r "$root/scripts/requirements.txt" >&2
cp "$root/scripts/requirements.txt" "$stamp"
