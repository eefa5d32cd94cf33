#!/bin/bash
# Every figure of docs/federation-at-scale.md's "Seventh pass" (the issue "Federation at scale"), one after another.
# Run it on a quiet machine (about 90 minutes on 2 cores): bash benchmarks/issue13_record.sh [OUT]
# OUT (default /tmp/endofed-record) gets one log per step, steps.log with the times, and the scale sweeps' results.
# The "before" figures come from git worktrees of 3a53a4e (the state before the issue) and 1585c4a (the first
# pass, with the site_round.py of 8f63e61, which 3a53a4e lacks), run with this checkout's .venv.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-/tmp/endofed-record}
PY=$ROOT/.venv/bin/python
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
mkdir -p "$OUT"
step() {
  local name=$1; shift
  echo "=== $name start $(date -u +%H:%M:%S)" >> "$OUT/steps.log"
  "$@" > "$OUT/$name.log" 2>&1
  echo "=== $name end $(date -u +%H:%M:%S) rc=$?" >> "$OUT/steps.log"
}
worktree() {  # worktree DIR COMMIT: a detached checkout of COMMIT at DIR (made once)
  [ -d "$1" ] || git -C "$ROOT" worktree add --detach "$1" "$2" > /dev/null
}
BEFORE=$OUT/before-3a53a4e
BEFORE_SITE=$OUT/before-1585c4a
worktree "$BEFORE" 3a53a4e
worktree "$BEFORE_SITE" 1585c4a
git -C "$ROOT" show 8f63e61:benchmarks/site_round.py > "$BEFORE_SITE/benchmarks/site_round.py"

cd "$ROOT" || exit 1
step bytes "$PY" benchmarks/federation_bytes.py
step effect "$PY" benchmarks/transport_effect.py --sites 3 --subjects 8 --rounds 20
step site-tiny "$PY" benchmarks/site_round.py --config configs/tiny.yaml --rounds 5
step site-vitb "$PY" benchmarks/site_round.py --config configs/default.yaml --rounds 5
OVH=(benchmarks/federation_overhead.py --transport delta_int8)
step ovh-tiny1 "$PY" "${OVH[@]}" --config configs/tiny.yaml --sites 1 --rounds 6 --echo-busy both
step ovh-tiny3 "$PY" "${OVH[@]}" --config configs/tiny.yaml --sites 3 --rounds 5 --echo-busy both
step ovh-vitb1 "$PY" "${OVH[@]}" --config configs/default.yaml --sites 1 --rounds 4 --echo-busy both
step ovh-vitb3 "$PY" "${OVH[@]}" --config configs/default.yaml --sites 3 --rounds 4 --echo-busy both
step scale-w3 "$PY" benchmarks/federation_scale.py --sites 3 10 30 100 --rounds 3 --variant both --in-flight 3 \
  --deployment 2 4 8 --out "$OUT/scale-w3"
step scale-w0 "$PY" benchmarks/federation_scale.py --sites 3 10 30 100 --rounds 3 --variant echo-vits \
  --out "$OUT/scale-w0"
step scale-cap400 "$PY" benchmarks/federation_scale.py --sites 3 10 30 100 --rounds 3 --variant echo-vits \
  --object-store-mb 400 --out "$OUT/scale-cap400"
for run in scale-w3 scale-cap400; do  # docs/federation-scale.png and docs/federation-scale-cap400.png
  step "plot-$run" "$PY" benchmarks/federation_scale.py --replot "$OUT/$run/results.json" \
    --before "$ROOT/docs/federation-scale-before.json" --plot "$OUT/$run.png"
done

cd "$BEFORE_SITE" || exit 1
step before-site-tiny env PYTHONPATH="$BEFORE_SITE" "$PY" benchmarks/site_round.py --config configs/tiny.yaml --rounds 5
step before-site-vitb env PYTHONPATH="$BEFORE_SITE" "$PY" benchmarks/site_round.py --config configs/default.yaml \
  --rounds 5
cd "$BEFORE" || exit 1
step before-ovh-tiny1 env PYTHONPATH="$BEFORE" "$PY" "${OVH[@]}" --config configs/tiny.yaml --sites 1 --rounds 6
step before-ovh-tiny3 env PYTHONPATH="$BEFORE" "$PY" "${OVH[@]}" --config configs/tiny.yaml --sites 3 --rounds 5
step before-ovh-vitb1 env PYTHONPATH="$BEFORE" "$PY" "${OVH[@]}" --config configs/default.yaml --sites 1 --rounds 4
step before-ovh-vitb3 env PYTHONPATH="$BEFORE" "$PY" "${OVH[@]}" --config configs/default.yaml --sites 3 --rounds 3
echo "=== all done $(date -u +%H:%M:%S); the worktrees stay: git worktree remove $BEFORE $BEFORE_SITE" >> "$OUT/steps.log"
