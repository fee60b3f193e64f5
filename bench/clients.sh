#!/usr/bin/env bash
# git operations in a watched folder (issue 8): briefcase watch vs rsync -a --delete.
# See the docstring of bench/clients.py for what is measured.
#
#   bash bench/clients.sh                         # build HEAD (release), 5 runs, ~5 min after the build
#   BENCH_CLIENTS_REPS=1 bash bench/clients.sh    # one run
#   BRIEFCASE_BIN=/path/to/briefcase bash bench/clients.sh   # skip the build
#   BENCH_REV=worktree bash bench/clients.sh      # build the working tree instead of a clean export of HEAD
#
# Writes bench/results/clients-<date>.md (BENCH_CLIENTS_OUT to change); work files under
# $BENCH_DIR/clients (default /tmp/briefcase-bench), the watch logs under $BENCH_DIR/logs.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BENCH_DIR="${BENCH_DIR:-/tmp/briefcase-bench}"
BENCH_REV="${BENCH_REV:-HEAD}"
mkdir -p "$BENCH_DIR"

say() { printf '%s clients.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

for tool in git rsync python3; do
    if ! command -v "$tool" >/dev/null; then
        if [[ "$tool" == rsync && -z "${BENCH_NO_INSTALL:-}" ]]; then
            say "installing rsync"
            apt-get install -y rsync >"$BENCH_DIR/apt.log" 2>&1 ||
                { apt-get update >>"$BENCH_DIR/apt.log" 2>&1 && apt-get install -y rsync >>"$BENCH_DIR/apt.log" 2>&1; }
        else
            say "$tool is needed"; exit 1
        fi
    fi
done

# builds briefcase (release) unless BRIEFCASE_BIN is set; exports BRIEFCASE_BIN and BENCH_REV_DESC
. "$REPO/bench/lib.sh"

python3 "$REPO/bench/clients.py"
