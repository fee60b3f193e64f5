#!/usr/bin/env bash
# Where briefcase's time goes: strace -c of first sync / re-sync / watch, and per-save phase
# timings from BRIEFCASE_LOG=debug. See bench/README.md ("Profiling") and bench/profile.py.
#   bench/profile.sh                 # both parts
#   PROFILE=oneshot bench/profile.sh # only some parts: oneshot,live,idle,stick (stick: not in the default)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BENCH_DIR="${BENCH_DIR:-/tmp/briefcase-bench}"
BENCH_REV="${BENCH_REV:-HEAD}"
mkdir -p "$BENCH_DIR/profile"
say() { printf '%s profile.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v strace >/dev/null || apt-get install -y strace >/dev/null
. "$REPO/bench/lib.sh"
export BRIEFCASE_BIN
python3 "$REPO/bench/profile.py" | tee "$BENCH_DIR/profile/profile.md"
