#!/usr/bin/env bash
# The simulator's honesty check: each deliberately broken variant of Tally in
# tests/mutants/ is applied in turn, built, and run under the simulator's CI
# budget, which must find it. The work tree is put back after each (the broken
# code never stays). Needs a clean work tree under shared/ and functions/.
#   scripts/with-emulator.sh scripts/simulate-mutants.sh [patch...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
if ! git diff --quiet -- shared functions; then
  echo "simulate-mutants: shared/ or functions/ has uncommitted changes; commit or stash them first" >&2
  exit 2
fi
patches=("$@")
[ ${#patches[@]} -gt 0 ] || patches=(tests/mutants/*.patch)
mkdir -p .tally
restore() { git checkout -q -- shared functions; }
trap restore EXIT
missed=0
for patch in "${patches[@]}"; do
  name="$(basename "$patch" .patch)"
  git apply "$patch"
  cargo build -q --workspace --all-targets
  log=".tally/mutant-$name.log"
  started=$(date +%s)
  if target/debug/simulate --seeds 5 --ops 240 --first-failure >"$log" 2>&1; then
    echo "MISSED $name: every seed passed ($log)"
    missed=$((missed + 1))
  else
    first="$(grep -m1 -E '^seed [0-9]+: .* FAIL' "$log" | sed -E 's/^(seed [0-9]+):.* FAIL: /\1: /' | cut -c1-200)"
    echo "found  $name in $(( $(date +%s) - started )) s — $first"
  fi
  restore
done
cargo build -q --workspace --all-targets
exit "$missed"
