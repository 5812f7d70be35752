#!/usr/bin/env bash
# Tally's events on the local stack (scripts/events.py; docs/events.md), with
# the project's Python environment (boto3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/venv.sh" >/dev/null
exec "$root/.venv/bin/python" "$root/scripts/events.py" "$@"
