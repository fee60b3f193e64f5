#!/usr/bin/env bash
# End-to-end benchmark of briefcase against rsync, unison and lsyncd. See bench/README.md.
#
#   bench/run.sh                     # full run (~15-20 min), writes docs/performance.md
#   BENCH_QUICK=1 bench/run.sh       # scaled-down smoke run (~3 min), writes $BENCH_DIR/performance-quick.md
#   BENCH_WORKLOADS=edit,bin bench/run.sh     # pick workloads: edit,bin,burst,first,idle
#   BENCH_WORKLOADS=stick bench/run.sh        # the stick (issue 3): stick-reconcile,stick-bytes,stick-first
#   BENCH_TOOLS=briefcase,lsyncd bench/run.sh # pick tools: briefcase,lsyncd,lsyncd-direct,unison,rsync
#   BRIEFCASE_BIN=/path/to/briefcase bench/run.sh   # skip the build
#   BENCH_REV=worktree bench/run.sh  # build the working tree (cargo build --release) instead of a
#                                    # clean export of HEAD (default: BENCH_REV=HEAD)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BENCH_DIR="${BENCH_DIR:-/tmp/briefcase-bench}"
BENCH_REV="${BENCH_REV:-HEAD}"
mkdir -p "$BENCH_DIR"

say() { printf '%s run.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# 1. peers
need=()
command -v rsync >/dev/null || need+=(rsync)
command -v unison >/dev/null || need+=(unison)
command -v lsyncd >/dev/null || need+=(lsyncd)
# the stick workloads: age for the `tar | age` peer, fusefat + dosfstools for the FAT32 image
case ",${BENCH_WORKLOADS:-}," in
    *,stick*|*,all,*)
        command -v age >/dev/null || need+=(age)
        if [[ "${BENCH_STICK_FAT:-auto}" != "0" ]]; then
            command -v fusefat >/dev/null || need+=(fusefat)
            command -v mkfs.vfat >/dev/null || need+=(dosfstools)
        fi ;;
esac
if ((${#need[@]})) && [[ "${BENCH_NO_INSTALL:-}" == "" ]]; then
    say "installing ${need[*]}"
    if ! apt-get install -y "${need[@]}" >"$BENCH_DIR/apt.log" 2>&1; then
        apt-get update >>"$BENCH_DIR/apt.log" 2>&1
        apt-get install -y "${need[@]}" >>"$BENCH_DIR/apt.log" 2>&1
    fi
fi

# 2. briefcase
. "$REPO/bench/lib.sh"

# 3. inotify budget: the idle workload watches idle_dirs directories per watcher (briefcase also
#    watches its mirror), so ask for 3x that plus headroom.
if [[ "${BENCH_QUICK:-0}" != "0" && -n "${BENCH_QUICK:-}" ]]; then dirs="${BENCH_IDLE_DIRS:-1000}"; else dirs="${BENCH_IDLE_DIRS:-10000}"; fi
want=$((dirs * 3 + 8192))
have="$(cat /proc/sys/fs/inotify/max_user_watches)"
if ((have < want)); then
    say "fs.inotify.max_user_watches is $have, the idle workload needs about $want; raising it (sysctl -w)"
    sysctl -w fs.inotify.max_user_watches="$want" >/dev/null || say "could not raise it; results may show polling"
fi

# 4. run
python3 "$REPO/bench/bench.py"

# 5. report
if [[ -n "${BENCH_REPORT:-}" ]]; then
    out="$BENCH_REPORT"
elif [[ "${BENCH_QUICK:-0}" != "0" && -n "${BENCH_QUICK:-}" ]]; then
    out="$BENCH_DIR/performance-quick.md"
else
    out="$REPO/docs/performance.md"
fi
# BENCH_BASELINE=path/to/results.json of an earlier run adds a before/now table for briefcase
python3 "$REPO/bench/report.py" "$BENCH_DIR/results.json" "$out" ${BENCH_BASELINE:+"$BENCH_BASELINE"}
