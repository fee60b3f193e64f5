#!/usr/bin/env python3
"""End-to-end benchmark of briefcase against rsync, unison and lsyncd on the same workloads.

Run through bench/run.sh (which installs the peers and builds briefcase); this script only
generates the data, drives the tools, measures, and writes the raw results as JSON.
Standard library only. Every number is a wall-clock measurement on this machine; the report
(bench/report.py) shows medians and the ratio briefcase / best peer.

Configuration is by environment variable (see bench/README.md); the most useful are
BENCH_DIR, BENCH_QUICK, BENCH_WORKLOADS, BENCH_TOOLS and BRIEFCASE_BIN.
"""

import atexit
import base64
import hashlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

MiB = 1 << 20
KiB = 1 << 10


# ---------------------------------------------------------------------------------------------
# configuration


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def env_float(name, default):
    v = os.environ.get(name)
    return float(v) if v not in (None, "") else default


QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
BENCH_DIR = os.path.abspath(os.environ.get("BENCH_DIR", "/tmp/briefcase-bench"))
BRIEFCASE_BIN = os.environ.get("BRIEFCASE_BIN", "")
ALL_WORKLOADS = ["edit", "bin", "burst", "first", "idle"]
# the stick workloads of issue 3: not in the default run (the FAT32 image makes them long);
# BENCH_WORKLOADS=stick selects the three, BENCH_WORKLOADS=all everything
STICK_WORKLOADS = ["stick-reconcile", "stick-bytes", "stick-first"]
_ALIASES = {"stick": STICK_WORKLOADS, "all": ALL_WORKLOADS + STICK_WORKLOADS}
WORKLOADS = []
for _w in os.environ.get("BENCH_WORKLOADS", ",".join(ALL_WORKLOADS)).split(","):
    for _x in _ALIASES.get(_w.strip(), [_w.strip()]):
        if _x and _x not in WORKLOADS:
            WORKLOADS.append(_x)
_unknown = [w for w in WORKLOADS if w not in ALL_WORKLOADS + STICK_WORKLOADS]
if _unknown:
    sys.exit(f"unknown workload(s) {_unknown}; known: {ALL_WORKLOADS + STICK_WORKLOADS}, stick, all")
ALL_TOOLS = ["briefcase", "lsyncd", "lsyncd-direct", "unison", "rsync"]
TOOLS = [t for t in os.environ.get("BENCH_TOOLS", ",".join(ALL_TOOLS)).split(",") if t]

C = {
    # save -> mirror
    "edit_saves": env_int("BENCH_EDIT_SAVES", 5 if QUICK else 20),
    "text_mib": 1,
    "gap": env_float("BENCH_GAP", 0.2),  # pause after the mirror matched, before the next change
    # ... and at least this long between two saves: rsync's quick check (lsyncd) and unison's
    # fast check compare mtimes in whole seconds, so a same-size save within the same second as
    # the last one is not seen by them at all (see bench/README.md)
    "save_interval": env_float("BENCH_SAVE_INTERVAL", 1.05),
    # 4 KiB in a big binary
    "bin_mib": env_int("BENCH_BIN_MIB", 20 if QUICK else 200),
    "bin_reps": env_int("BENCH_BIN_REPS", 2 if QUICK else 5),
    # burst / delete, in a folder with background files
    "bg_files": env_int("BENCH_BG_FILES", 1000 if QUICK else 10000),
    "burst_files": env_int("BENCH_BURST_FILES", 500 if QUICK else 5000),
    "burst_rounds": env_int("BENCH_BURST_ROUNDS", 1 if QUICK else 3),
    # lsyncd's default.direct spawns one cp per file: a 5,000-file burst takes minutes
    "direct_burst_rounds": env_int("BENCH_DIRECT_BURST_ROUNDS", 1),
    # first sync / re-sync
    "first_files": env_int("BENCH_FIRST_FILES", 2000 if QUICK else 20000),
    "first_mib": env_int("BENCH_FIRST_MIB", 45 if QUICK else 450),
    "first_reps": env_int("BENCH_FIRST_REPS", 1 if QUICK else 3),
    "resync_reps": env_int("BENCH_RESYNC_REPS", 3),
    # idle
    "idle_files": env_int("BENCH_IDLE_FILES", 10000 if QUICK else 100000),
    "idle_dirs": env_int("BENCH_IDLE_DIRS", 1000 if QUICK else 10000),
    "idle_secs": env_int("BENCH_IDLE_SECS", 8 if QUICK else 35),
    # before the idle window: wait until the process used no CPU for 3 s in a row (at most this
    # long); what it spends until then is reported as the aftermath of the initial sync
    "settle_max": env_int("BENCH_SETTLE_MAX", 180),
    "idle_tools": [t for t in os.environ.get("BENCH_IDLE_TOOLS", "briefcase,lsyncd").split(",") if t],
    # the stick (issue 3); "fat": also on a FAT32 image mounted with fusefat ("auto": if fusefat
    # and mkfs.vfat are installed and we are root)
    "stick_fat": os.environ.get("BENCH_STICK_FAT", "auto"),
    "stick_fat_size": os.environ.get("BENCH_STICK_FAT_SIZE", "2G"),
    # reconcile: small-file trees (1-8 KiB, 100 per dir) of stick_files and stick_files_big files;
    # stick_changes_few and stick_changes files rewritten in the first, stick_changes in the second
    "stick_files": env_int("BENCH_STICK_FILES", 1000 if QUICK else 20000),
    "stick_files_big": env_int("BENCH_STICK_FILES_BIG", 2000 if QUICK else 40000),
    "stick_changes_few": env_int("BENCH_STICK_CHANGES_FEW", 10 if QUICK else 100),
    "stick_changes": env_int("BENCH_STICK_CHANGES", 100 if QUICK else 1000),
    "stick_reps": env_int("BENCH_STICK_REPS", 1 if QUICK else 3),
    # bytes written for a 4 KiB change in a big file
    "stick_bytes_mib": env_int("BENCH_STICK_BYTES_MIB", 20 if QUICK else 200),
    "stick_bytes_reps": env_int("BENCH_STICK_BYTES_REPS", 2 if QUICK else 5),
    # first copy to a fresh stick: big files of 1-10 MiB plus small files of 1-16 KiB
    "stick_first_big": env_int("BENCH_STICK_FIRST_BIG", 10 if QUICK else 200),
    "stick_first_small": env_int("BENCH_STICK_FIRST_SMALL", 30 if QUICK else 300),
    "stick_first_reps": env_int("BENCH_STICK_FIRST_REPS", 1 if QUICK else 3),
    "stick_timeout": env_float("BENCH_STICK_TIMEOUT", 3600.0),
    # limits
    "latency_timeout": env_float("BENCH_LATENCY_TIMEOUT", 10.0),
    "hang_timeout": env_float("BENCH_HANG_TIMEOUT", 120.0),
    "initial_timeout": env_float("BENCH_INITIAL_TIMEOUT", 900.0),
    "briefcase_log": os.environ.get("BENCH_BRIEFCASE_LOG", ""),  # e.g. "debug" for phase timings
}

RESULTS_PATH = os.path.join(BENCH_DIR, "results.json")
RESULTS = {"meta": {}, "config": C, "workloads": {}, "events": []}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def save_results():
    tmp = RESULTS_PATH + ".tmp"
    with open(tmp, "w") as f:
        json.dump(RESULTS, f, indent=1)
    os.replace(tmp, RESULTS_PATH)


def record(workload, tool, **kv):
    """Appends samples / sets fields of RESULTS['workloads'][workload]['tools'][tool]."""
    w = RESULTS["workloads"].setdefault(workload, {"tools": {}})
    t = w["tools"].setdefault(tool, {"samples": [], "errors": []})
    for k, v in kv.items():
        if k in ("samples", "errors") or isinstance(t.get(k), list):
            t.setdefault(k, []).extend(v if isinstance(v, list) else [v])
        else:
            t[k] = v
    save_results()


def note_error(workload, tool, msg):
    log(f"  !! {workload}/{tool}: {msg}")
    record(workload, tool, errors=[msg])


# ---------------------------------------------------------------------------------------------
# data generation (deterministic: seeded)


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def text_content(rng, size):
    """Text of `size` bytes made of 64-byte lines (63 printable characters + newline)."""
    lines = []
    for _ in range(size // 64):
        lines.append(base64.b64encode(rng.randbytes(48))[:63] + b"\n")
    return bytearray(b"".join(lines))


def make_binary(path, size, seed):
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(rng.randbytes(n))
            left -= n


def make_tree(root, n_files, n_dirs, sizes, seed, fanout=None):
    """n_files files spread evenly over n_dirs directories (two levels: fanout top dirs)."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    fanout = fanout or max(1, int(round(n_dirs ** 0.5)))
    dirs = []
    # top-level dirs count as dirs too: fanout top dirs + (n_dirs - fanout) below them
    for t in range(fanout):
        dirs.append(f"t{t:03d}")
    i = 0
    while len(dirs) < n_dirs:
        dirs.append(f"t{i % fanout:03d}/s{i // fanout:04d}")
        i += 1
    for d in dirs:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    total = 0
    for k in range(n_files):
        d = dirs[k % len(dirs)]
        size = sizes(rng, k)
        write_file(os.path.join(root, d, f"f{k:06d}.dat"), rng.randbytes(size))
        total += size
    return total


def manifest(root):
    """{relpath: size or 'd'} of a tree, without briefcase's and the tools' own files."""
    out = {}
    root = root.rstrip("/")
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d != ".briefcase"]
            rel = ""
        for d in dirnames:
            out[os.path.join(rel, d)] = "d"
        for fn in filenames:
            if rel == "" and fn == ".briefcase-folder":
                continue
            if fn.startswith(".briefcase-tmp-") or fn.endswith(".unison.tmp") or fn.startswith(".goutputstream-"):
                continue
            try:
                out[os.path.join(rel, fn)] = os.lstat(os.path.join(dirpath, fn)).st_size
            except FileNotFoundError:
                pass
    return out


def diff_summary(a, b, limit=5):
    only_a = [k for k in a if k not in b]
    only_b = [k for k in b if k not in a]
    differ = [k for k in a if k in b and a[k] != b[k]]
    return (f"{len(only_a)} only in source {only_a[:limit]}, {len(only_b)} only in mirror {only_b[:limit]}, "
            f"{len(differ)} differ {differ[:limit]}")


def wait_tree_match(src, dst, timeout, proc=None, src_manifest=None, every=0.25):
    """Polls until dst's manifest equals src's; returns seconds waited or raises."""
    t0 = time.perf_counter()
    want = src_manifest if src_manifest is not None else manifest(src)
    last = None
    while True:
        have = manifest(dst) if os.path.isdir(dst) else {}
        if have == want:
            return time.perf_counter() - t0
        last = have
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before the mirror matched; "
                               + diff_summary(want, last))
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"mirror did not match within {timeout:.0f} s: " + diff_summary(want, last))
        time.sleep(every)


# ---------------------------------------------------------------------------------------------
# processes we start (and only those) are stopped by PID at exit

CHILDREN = []


def spawn(cmd, env=None, log_path=None, cwd=None):
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                         start_new_session=True)
    CHILDREN.append(p)
    return p


def stop(p, grace=15.0):
    if p is None or p.poll() is not None:
        return p.returncode if p else None
    try:
        os.kill(p.pid, signal.SIGTERM)
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log(f"  pid {p.pid} ignored SIGTERM for {grace:.0f} s; SIGKILL")
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    except ProcessLookupError:
        pass
    # children of lsyncd (rsync) or of a shell: they share the session we created
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    return p.returncode


@atexit.register
def _cleanup():
    for p in CHILDREN:
        try:
            stop(p, grace=5)
        except Exception:
            pass


def run_timed(cmd, env=None, log_path=None, timeout=None):
    """Runs cmd to completion; returns (seconds, returncode)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    CHILDREN.append(p)
    try:
        rc = p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise TimeoutError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s (killed)")
    dt = time.perf_counter() - t0
    CHILDREN.remove(p)
    return dt, rc


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            data = f.read()[-6000:]
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-n:])
    except OSError:
        return ""


def load_now():
    """Snapshot of the machine's load: PSI totals (microseconds) and the time."""
    snap = {"t": time.perf_counter()}
    for res in ("cpu", "io"):
        try:
            with open(f"/proc/pressure/{res}") as f:
                snap[res] = int(f.readline().split("total=")[1])
        except (OSError, IndexError, ValueError):
            pass
    try:
        with open("/proc/loadavg") as f:
            snap["loadavg1"] = float(f.read().split()[0])
    except OSError:
        pass
    return snap


def load_since(a):
    """Share of the time since snapshot `a` during which some task waited for CPU / for I/O
    (Linux PSI 'some'), and the 1-minute load average now."""
    b = load_now()
    dt = (b["t"] - a["t"]) * 1e6
    out = {"secs": round(b["t"] - a["t"], 1), "loadavg1": b.get("loadavg1")}
    for res in ("cpu", "io"):
        if res in a and res in b and dt > 0:
            out[f"{res}_pressure_pct"] = round(100 * (b[res] - a[res]) / dt, 1)
    return out


def keep_logs(work, name):
    """Copies the tools' logs of a session to BENCH_DIR/logs/NAME before the tree is removed."""
    dst = os.path.join(BENCH_DIR, "logs", name)
    os.makedirs(dst, exist_ok=True)
    try:
        for fn in os.listdir(work):
            if fn.endswith(".log") or fn.endswith(".lua"):
                shutil.copy(os.path.join(work, fn), dst)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# tools


def briefcase_env(state):
    env = dict(os.environ)
    env["XDG_CONFIG_HOME"] = os.path.join(state, "config")
    env["XDG_DATA_HOME"] = os.path.join(state, "data")
    env["XDG_RUNTIME_DIR"] = os.path.join(state, "run")
    env["BRIEFCASE_NAME"] = "bench"
    for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"):
        os.makedirs(env[k], mode=0o700, exist_ok=True)
    if C["briefcase_log"]:
        env["BRIEFCASE_LOG"] = C["briefcase_log"]
    return env


def unison_env(state):
    env = dict(os.environ)
    env["UNISON"] = os.path.join(state, "unison")
    os.makedirs(env["UNISON"], exist_ok=True)
    return env


UNISON_OPTS = ["-batch", "-times", "-ui", "text"]


class Watcher:
    """A live-sync tool following src into dst."""

    live_tools = ["briefcase", "lsyncd", "lsyncd-direct", "unison"]

    def __init__(self, tool, src, dst, work):
        self.tool, self.src, self.dst, self.work = tool, src, dst, work
        self.proc = None
        self.next_change = 0.0  # see C["save_interval"]
        os.makedirs(work, exist_ok=True)
        self.log = os.path.join(work, f"{tool}.log")

    def start(self):
        os.makedirs(self.dst, exist_ok=True)
        if self.tool == "briefcase":
            env = briefcase_env(os.path.join(self.work, "state"))
            self.proc = spawn([BRIEFCASE_BIN, "watch", self.src, self.dst], env=env, log_path=self.log)
        elif self.tool in ("lsyncd", "lsyncd-direct"):
            cfg = os.path.join(self.work, "lsyncd.lua")
            layer = "default.rsync" if self.tool == "lsyncd" else "default.direct"
            with open(cfg, "w") as f:
                f.write(f"""settings {{
    nodaemon = true,
    logfile = "{self.work}/lsyncd-internal.log",
    statusFile = "{self.work}/lsyncd.status",
    statusInterval = 3600,
    insist = false,
}}
sync {{
    {layer},
    source = "{self.src}",
    target = "{self.dst}",
    delay = 0,
}}
""")
            self.proc = spawn(["lsyncd", cfg], log_path=self.log)
        elif self.tool == "unison":
            env = unison_env(self.work)
            # unison-fsmonitor is not packaged in Debian 12, so `-repeat watch` is unavailable;
            # -repeat 1 rescans both roots every second.
            self.proc = spawn(["unison", self.src, self.dst] + UNISON_OPTS
                              + ["-repeat", "1", "-logfile", os.path.join(self.work, "unison.log")],
                              env=env, log_path=self.log)
        else:
            raise ValueError(self.tool)

    def wait_ready(self, timeout, src_manifest=None):
        """Waits for the initial sync: the tool's own "done" line where it prints one
        (cheap to poll), then until the mirror matches the source. Returns seconds."""
        t0 = time.perf_counter()
        # lsyncd prints 'Startup of /src/ -> /dst/ finished.' (default.rsync) or
        # 'Startup of "/src/" finished: 0' (default.direct)
        line, path = {"briefcase": ("watching ", self.log),
                      "lsyncd": ("finished", self.log),
                      "lsyncd-direct": ("finished", self.log)}.get(self.tool, (None, None))
        big = src_manifest is not None and len(src_manifest) >= 20000
        if line:
            while line not in tail(path, 400):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.tool} exited {self.proc.returncode}: {tail(self.log)}")
                if time.perf_counter() - t0 > timeout:
                    raise TimeoutError(f"{self.tool} never printed {line!r}")
                time.sleep(0.02 if not big else 0.5)
        wait_tree_match(self.src, self.dst, max(1.0, timeout - (time.perf_counter() - t0)), self.proc,
                        src_manifest=src_manifest, every=0.05 if not big else 2.0)
        return time.perf_counter() - t0

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        rc = stop(self.proc)
        return rc


# ---------------------------------------------------------------------------------------------
# pollers


POLL_SLEEP = 0.0005


def wait_region(path, offset, expect, size, timeout, proc=None):
    """Returns when `path` has size `size` and `expect` at `offset` (fresh open each time,
    so an atomic replace is seen); returns the time of the match (perf_counter)."""
    deadline = time.perf_counter() + timeout
    n = len(expect)
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if os.fstat(fd).st_size == size and os.pread(fd, n, offset) == expect:
                    return time.perf_counter()
            finally:
                os.close(fd)
        except FileNotFoundError:
            pass
        now = time.perf_counter()
        if now > deadline:
            raise TimeoutError(f"{path} did not get the change within {timeout:.0f} s")
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the sync process exited with {proc.returncode}")
        time.sleep(POLL_SLEEP)


def wait_files(dst, expected, present, timeout, proc=None):
    """expected: {reldir: {name: size}}. present=True: until all exist with their sizes;
    present=False: until none exists. Returns (time of match, time first progress was seen)."""
    pending = dict(expected)
    deadline = time.perf_counter() + timeout
    first = None
    while True:
        for d in list(pending):
            names = pending[d]
            full = os.path.join(dst, d)
            try:
                have = set(os.listdir(full))
            except FileNotFoundError:
                have = set()
            if present:
                if have:
                    first = first or time.perf_counter()
                if not names.keys() <= have:
                    continue
                ok = True
                for n, sz in names.items():
                    try:
                        if os.stat(os.path.join(full, n)).st_size != sz:
                            ok = False
                            break
                    except FileNotFoundError:
                        ok = False
                        break
                if ok:
                    del pending[d]
            else:
                left = names.keys() & have
                if len(left) < len(names):
                    first = first or time.perf_counter()
                if not left:
                    del pending[d]
        if not pending:
            return time.perf_counter(), first
        if time.perf_counter() > deadline:
            n = sum(len(v) for v in pending.values())
            raise TimeoutError(f"{n} files still {'missing' if present else 'present'} after {timeout:.0f} s")
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the sync process exited with {proc.returncode}")
        time.sleep(0.002)


# ---------------------------------------------------------------------------------------------
# live workloads


def live_tools():
    return [t for t in TOOLS if t in Watcher.live_tools]


def edit_saves(wl, tool, w, rel, mode, saves, seed):
    """One-line edits of a text file; latency from the end of the save to the mirror having it."""
    src_path = os.path.join(w.src, rel)
    dst_path = os.path.join(w.dst, rel)
    with open(src_path, "rb") as f:
        content = bytearray(f.read())
    nlines = len(content) // 64
    rng = random.Random(seed)
    lat = []
    for i in range(saves + 1):  # the first save is a warm-up, not recorded
        time.sleep(max(0.0, w.next_change - time.perf_counter()))
        line = rng.randrange(nlines)
        new = (f"edit {i:04d} by {tool} " + base64.b64encode(rng.randbytes(48)).decode())[:63].encode() + b"\n"
        content[line * 64:(line + 1) * 64] = new
        if mode == "rename":
            # GLib/gedit style: write a temp file beside it, fsync, rename over the original
            tmp = os.path.join(os.path.dirname(src_path), ".goutputstream-" + "%06X" % rng.randrange(1 << 24))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, content)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, src_path)
        else:
            # VS Code style: truncate and rewrite the file in place (no fsync)
            fd = os.open(src_path, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, content)
            os.close(fd)
        t0 = time.perf_counter()
        w.next_change = t0 + C["save_interval"]
        try:
            t1 = wait_region(dst_path, line * 64, new, len(content), C["latency_timeout"], w.proc)
        except (TimeoutError, RuntimeError) as e:
            note_error(wl, tool, f"save {i}: {e}")
            if not w.alive():
                return lat
            # let it catch up before going on
            try:
                wait_tree_match(w.src, w.dst, C["hang_timeout"], w.proc)
            except Exception as e2:
                note_error(wl, tool, f"no recovery after save {i}: {e2}")
                return lat
            continue
        if i > 0:
            lat.append(t1 - t0)
        w.next_change = max(w.next_change, time.perf_counter() + C["gap"])
    record(wl, tool, samples=lat)
    log(f"  {wl}/{tool}: median {statistics.median(lat) * 1000:.1f} ms over {len(lat)} saves" if lat else
        f"  {wl}/{tool}: no samples")
    return lat


def binary_edits(wl, tool, w, rel, reps, seed):
    src_path = os.path.join(w.src, rel)
    dst_path = os.path.join(w.dst, rel)
    size = os.path.getsize(src_path)
    rng = random.Random(seed)
    lat = []
    for i in range(reps):
        off = rng.randrange(size // 4096) * 4096
        new = rng.randbytes(4096)
        fd = os.open(src_path, os.O_WRONLY)
        os.pwrite(fd, new, off)
        os.close(fd)
        t0 = time.perf_counter()
        try:
            t1 = wait_region(dst_path, off, new, size, C["hang_timeout"], w.proc)
        except (TimeoutError, RuntimeError) as e:
            note_error(wl, tool, f"edit {i}: {e}")
            if not w.alive():
                break
            continue
        lat.append(t1 - t0)
        log(f"  {wl}/{tool}: {lat[-1]:.3f} s")
        time.sleep(max(C["gap"], C["save_interval"]))
    record(wl, tool, samples=lat)
    return lat


def burst_and_delete(tool, w, rounds, n_files, seed):
    rng = random.Random(seed)
    per_dir = 100
    n_dirs = max(1, n_files // per_dir)
    for r in range(rounds):
        base = f"burst{r}"
        expected = {}
        t_start = time.perf_counter()
        os.makedirs(os.path.join(w.src, base))
        for k in range(n_files):
            d = f"{base}/d{k % n_dirs:03d}"
            if k < n_dirs:
                os.makedirs(os.path.join(w.src, d))
            size = rng.randrange(1 * KiB, 8 * KiB)
            name = f"n{k:05d}.txt"
            write_file(os.path.join(w.src, d, name), rng.randbytes(size))
            expected.setdefault(d, {})[name] = size
        t0 = time.perf_counter()
        try:
            t1, first = wait_files(w.dst, expected, True, C["hang_timeout"], w.proc)
            record("burst", tool, samples=[t1 - t0],
                   burst_secs=[t0 - t_start], from_start=[t1 - t_start],
                   first_seen=[(first - t0) if first else None])
            log(f"  burst/{tool}: round {r}: {t1 - t0:.3f} s after the burst ({t0 - t_start:.3f} s to write it)")
        except (TimeoutError, RuntimeError) as e:
            note_error("burst", tool, f"round {r}: {e}")
            if not w.alive():
                return
        try:
            wait_tree_match(w.src, w.dst, C["hang_timeout"], w.proc)
        except Exception as e:
            note_error("burst", tool, f"round {r}: tree never matched after the burst: {e}")
        time.sleep(1.0)
        # delete the same files (and their directories)
        t_start = time.perf_counter()
        shutil.rmtree(os.path.join(w.src, base))
        t0 = time.perf_counter()
        try:
            t1, first = wait_files(w.dst, expected, False, C["hang_timeout"], w.proc)
            record("delete", tool, samples=[t1 - t0], rm_secs=[t0 - t_start])
            log(f"  delete/{tool}: round {r}: {t1 - t0:.3f} s after rm -r ({t0 - t_start:.3f} s to delete)")
        except (TimeoutError, RuntimeError) as e:
            note_error("delete", tool, f"round {r}: {e}; log tail: {tail(w.log, 5)}")
            if not w.alive():
                return
        try:
            wait_tree_match(w.src, w.dst, C["hang_timeout"], w.proc)
        except Exception as e:
            note_error("delete", tool, f"round {r}: tree never matched after the delete: {e}")
        time.sleep(1.0)


def session(name, tools, setup, body):
    """For each tool: copy the prepared source tree, start the watcher, wait for the initial
    sync, run body(tool, watcher), stop."""
    proto = os.path.join(BENCH_DIR, "data", name)
    if not os.path.isdir(proto):
        log(f"generating {name} data")
        setup(proto + ".part")
        os.rename(proto + ".part", proto)
    proto_manifest = manifest(proto)
    for tool in tools:
        base = os.path.join(BENCH_DIR, "live", name, tool)
        shutil.rmtree(base, ignore_errors=True)
        src, dst, work = (os.path.join(base, x) for x in ("src", "dst", "work"))
        os.makedirs(base)
        subprocess.run(["cp", "-a", proto, src], check=True)
        os.sync()
        w = Watcher(tool, src, dst, work)
        log(f"{name}: starting {tool}")
        ev = {"session": name, "tool": tool}
        RESULTS["events"].append(ev)
        w.start()
        try:
            try:
                t = w.wait_ready(C["initial_timeout"], src_manifest=proto_manifest)
                log(f"  {tool}: initial sync done after {t:.2f} s")
                ev["initial_sync_secs"] = t
            except Exception as e:
                for wl in body.workloads:
                    note_error(wl, tool, f"initial sync failed: {e}; log tail: {tail(w.log, 5)}")
                continue
            time.sleep(1.0)
            l0 = load_now()
            body(tool, w)
            ev["load"] = load_since(l0)
            log(f"  load during {name}/{tool}: {ev['load']}")
        finally:
            rc = w.stop()
            if tool == "briefcase" and rc not in (0, None):
                note_error(body.workloads[0], tool, f"briefcase watch exited {rc}: {tail(w.log, 5)}")
            keep_logs(work, f"{name}-{tool}")
        shutil.rmtree(base, ignore_errors=True)


def run_small_session():
    """Folder with a 1 MiB text file and a big binary: editor saves and 4 KiB binary edits."""
    def setup(d):
        os.makedirs(d)
        write_file(os.path.join(d, "notes.txt"), text_content(random.Random(1), C["text_mib"] * MiB))
        if "bin" in WORKLOADS:
            make_binary(os.path.join(d, "disk.img"), C["bin_mib"] * MiB, 2)

    def body(tool, w):
        if "edit" in WORKLOADS:
            edit_saves("edit_rename", tool, w, "notes.txt", "rename", C["edit_saves"], 10)
            edit_saves("edit_inplace", tool, w, "notes.txt", "inplace", C["edit_saves"], 11)
        if "bin" in WORKLOADS:
            binary_edits("bin", tool, w, "disk.img", C["bin_reps"], 12)
    body.workloads = [x for x, g in (("edit_rename", "edit"), ("edit_inplace", "edit"), ("bin", "bin"))
                      if g in WORKLOADS]
    session(f"small-{C['bin_mib']}m" if "bin" in WORKLOADS else "small-nobin", live_tools(), setup, body)


def run_bg_session():
    """Folder with bg_files small files: a save among them, then bursts of creates and deletes."""
    def setup(d):
        make_tree(d, C["bg_files"], max(1, C["bg_files"] // 100), lambda rng, k: rng.randrange(KiB, 8 * KiB), 3,
                  fanout=10)
        write_file(os.path.join(d, "notes.txt"), text_content(random.Random(4), C["text_mib"] * MiB))

    def body(tool, w):
        if "edit" in WORKLOADS:
            edit_saves("edit_rename_bg", tool, w, "notes.txt", "rename", C["edit_saves"], 13)
        if "burst" in WORKLOADS:
            rounds = C["direct_burst_rounds"] if tool == "lsyncd-direct" else C["burst_rounds"]
            burst_and_delete(tool, w, min(rounds, C["burst_rounds"]), C["burst_files"], 14)
    body.workloads = [x for x, g in (("edit_rename_bg", "edit"), ("burst", "burst"), ("delete", "burst"))
                      if g in WORKLOADS]
    session(f"bg-{C['bg_files']}", live_tools(), setup, body)


# ---------------------------------------------------------------------------------------------
# one-shot: first sync and re-sync


def first_sync_tree(root):
    n = C["first_files"]
    n_big = max(1, n // 1000)
    n_small = n - n_big
    rng = random.Random(5)
    small = [rng.randrange(KiB, 16 * KiB) for _ in range(n_small)]
    big_each = max(KiB, (C["first_mib"] * MiB - sum(small)) // n_big)
    sizes = small + [big_each] * n_big
    rng.shuffle(sizes)
    total = make_tree(root, n, max(1, n // 20), lambda r, k: sizes[k], 6, fanout=20)
    return total


def run_oneshot():
    proto = os.path.join(BENCH_DIR, "data", f"first-{C['first_files']}-{C['first_mib']}m")
    if not os.path.isdir(proto):
        log("generating first-sync data")
        first_sync_tree(proto + ".part")
        os.rename(proto + ".part", proto)
    src_manifest = manifest(proto)
    nfiles = sum(1 for v in src_manifest.values() if v != "d")
    total = sum(v for v in src_manifest.values() if v != "d")
    RESULTS["meta"]["first_tree"] = {"files": nfiles, "dirs": len(src_manifest) - nfiles, "bytes": total}
    log(f"first sync tree: {nfiles} files, {total / MiB:.0f} MiB")
    tools = [t for t in TOOLS if t in ("briefcase", "rsync", "unison")]
    base = os.path.join(BENCH_DIR, "oneshot")
    l0 = load_now()
    for rep in range(C["first_reps"]):
        for tool in tools:
            shutil.rmtree(base, ignore_errors=True)
            os.makedirs(base)
            src, dst, work = (os.path.join(base, x) for x in ("src", "dst", "work"))
            subprocess.run(["cp", "-a", proto, src], check=True)
            os.makedirs(dst)
            os.makedirs(work)
            lg = os.path.join(work, f"{tool}.log")
            os.sync()
            try:
                if tool == "rsync":
                    t, rc = run_timed(["rsync", "-a", src + "/", dst + "/"], log_path=lg, timeout=C["initial_timeout"])
                    if rc != 0:
                        raise RuntimeError(f"rsync exited {rc}: {tail(lg)}")
                    t0 = time.perf_counter()
                    os.sync()
                    record("first", "rsync", samples=[t], with_sync=[t + time.perf_counter() - t0])
                    resync_cmd, renv = ["rsync", "-a", src + "/", dst + "/"], None
                elif tool == "unison":
                    renv = unison_env(work)
                    resync_cmd = ["unison", src, dst] + UNISON_OPTS + ["-logfile", os.path.join(work, "unison.log")]
                    t, rc = run_timed(resync_cmd, env=renv, log_path=lg, timeout=C["initial_timeout"])
                    if rc != 0:
                        raise RuntimeError(f"unison exited {rc}: {tail(lg)}")
                    t0 = time.perf_counter()
                    os.sync()
                    record("first", "unison", samples=[t], with_sync=[t + time.perf_counter() - t0])
                else:
                    renv = briefcase_env(os.path.join(work, "state"))
                    phases = {}
                    for ph, cmd in (("init", [BRIEFCASE_BIN, "init", src]),
                                    ("mirror_add", [BRIEFCASE_BIN, "mirror", "add", src, dst, "--name", "m"]),
                                    ("sync", [BRIEFCASE_BIN, "sync", src])):
                        dt, rc = run_timed(cmd, env=renv, log_path=lg, timeout=C["initial_timeout"])
                        if rc != 0:
                            raise RuntimeError(f"`briefcase {' '.join(cmd[1:2])}` exited {rc}: {tail(lg)}")
                        phases[ph] = dt
                    t = sum(phases.values())
                    record("first", "briefcase", samples=[t], **{f"phase_{k}": [v] for k, v in phases.items()})
                    resync_cmd = [BRIEFCASE_BIN, "sync", src]
                have = manifest(dst)
                if have != src_manifest:
                    note_error("first", tool, "mirror differs after the first sync: " + diff_summary(src_manifest, have))
                log(f"  first/{tool} rep {rep}: {t:.2f} s")
                for _ in range(C["resync_reps"]):
                    os.sync()
                    dt, rc = run_timed(resync_cmd, env=renv, log_path=lg, timeout=C["hang_timeout"])
                    if rc != 0:
                        note_error("resync", tool, f"exit {rc}: {tail(lg, 5)}")
                    else:
                        record("resync", tool, samples=[dt])
                log(f"  resync/{tool}: {statistics.median(RESULTS['workloads']['resync']['tools'][tool]['samples']):.3f} s median so far")
            except Exception as e:
                note_error("first", tool, f"rep {rep}: {e}")
            keep_logs(work, f"oneshot-{tool}-{rep}")
    RESULTS["events"].append({"session": "oneshot", "tool": "all", "load": load_since(l0)})
    shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# idle footprint


def proc_status(pid):
    st = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.strip()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is state (field 3); utime, stime are fields 14, 15
    ticks = int(fields[11]) + int(fields[12])
    return int(st["VmRSS"].split()[0]), int(st.get("VmHWM", "0 kB").split()[0]), ticks, int(st["Threads"])


def run_idle():
    nf, nd = C["idle_files"], C["idle_dirs"]
    proto = os.path.join(BENCH_DIR, "data", f"idle-{nf}-{nd}")
    if not os.path.isdir(proto):
        log("generating idle data")
        make_tree(proto + ".part", nf, nd, lambda rng, k: 100, 7, fanout=100)
        os.rename(proto + ".part", proto)
    src_manifest = manifest(proto)
    with open("/proc/sys/fs/inotify/max_user_watches") as f:
        RESULTS["meta"]["max_user_watches"] = int(f.read())
    hz = os.sysconf("SC_CLK_TCK")
    tools = [t for t in C["idle_tools"] if t in TOOLS]
    for tool in tools:
        base = os.path.join(BENCH_DIR, "live", "idle", tool)
        shutil.rmtree(base, ignore_errors=True)
        src, dst, work = (os.path.join(base, x) for x in ("src", "dst", "work"))
        os.makedirs(base)
        subprocess.run(["cp", "-a", proto, src], check=True)
        seeded = tool.startswith("lsyncd") and not os.environ.get("BENCH_IDLE_NO_SEED")
        if seeded:
            # lsyncd always starts with a full rsync; with the mirror pre-seeded it only compares
            # (saves minutes; its idle footprint does not depend on it)
            subprocess.run(["cp", "-a", proto, dst], check=True)
        os.sync()
        w = Watcher(tool, src, dst, work)
        log(f"idle: starting {tool}")
        w.start()
        try:
            try:
                t = w.wait_ready(C["initial_timeout"], src_manifest=src_manifest)
            except Exception as e:
                note_error("idle_rss", tool, f"initial sync failed: {e}; log tail: {tail(w.log, 5)}")
                continue
            _, hwm_initial, ticks_initial, _ = proc_status(w.proc.pid)
            log(f"  {tool}: initial sync of {nf} files done after {t:.1f} s (peak RSS {hwm_initial / 1024:.1f} MiB)")
            t_s = time.perf_counter()
            prev, quiet, settle_ticks = ticks_initial, 0, 0
            while quiet < 3 and time.perf_counter() - t_s < C["settle_max"]:
                time.sleep(1.0)
                tk = proc_status(w.proc.pid)[2]
                settle_ticks += tk - prev
                quiet = quiet + 1 if tk == prev else 0
                prev = tk
            settle_secs = max(0.0, time.perf_counter() - t_s - quiet)
            log(f"  {tool}: quiet {settle_secs:.0f} s after the initial sync ({settle_ticks / hz:.2f} s CPU until then)"
                + ("" if quiet >= 3 else f"; never quiet for 3 s within {C['settle_max']} s"))
            l0 = load_now()
            rss, ticks = [], []
            for _ in range(C["idle_secs"] + 1):
                r, hwm, tk, threads = proc_status(w.proc.pid)
                rss.append(r)
                ticks.append(tk)
                time.sleep(1.0)
            cpu_s = (ticks[-1] - ticks[0]) / hz
            # per-second CPU: the window's busiest second (briefcase's periodic full sync shows up here)
            per_sec = [(b - a) / hz for a, b in zip(ticks, ticks[1:])]
            record("idle_rss", tool, samples=[x / 1024 for x in rss], initial_sync_secs=t, seeded=seeded,
                   load=load_since(l0),
                   initial_peak_rss_mib=hwm_initial / 1024, initial_cpu_secs=ticks_initial / hz,
                   threads=threads)
            record("idle_cpu", tool, samples=[cpu_s], window_secs=C["idle_secs"], busiest_second=max(per_sec),
                   busy_seconds=sum(1 for x in per_sec if x > 0), settle_secs=settle_secs,
                   settle_cpu_secs=settle_ticks / hz, settled=quiet >= 3)
            log(f"  {tool}: idle RSS median {statistics.median(rss) / 1024:.1f} MiB, CPU {cpu_s:.2f} s over {C['idle_secs']} s")
        finally:
            w.stop()
            keep_logs(work, f"idle-{tool}")
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the stick (issue 3): reconcile after N changes, bytes written for a 4 KiB change, first copy

MOUNTS = []  # FAT images we mounted (and only those): unmounted at exit


def fat_available():
    """(yes?, why not) for the FAT32 stick: fusefat + mkfs.vfat + root + /dev/fuse."""
    want = str(C["stick_fat"]).lower()
    if want in ("0", "no", "false", "off"):
        return False, "BENCH_STICK_FAT=0"
    missing = [t for t in ("fusefat", "mkfs.vfat", "fusermount") if not shutil.which(t)]
    if missing:
        return False, f"{', '.join(missing)} not installed"
    if os.geteuid() != 0:
        return False, "not root"
    if not os.path.exists("/dev/fuse"):
        return False, "no /dev/fuse"
    return True, ""


def unmount(mnt):
    if not os.path.ismount(mnt):
        if mnt in MOUNTS:
            MOUNTS.remove(mnt)
        return
    for i in range(20):
        r = subprocess.run(["fusermount", "-u", mnt], capture_output=True, text=True)
        if r.returncode == 0 or not os.path.ismount(mnt):
            break
        time.sleep(0.5)  # busy: a process of ours may still be closing files
    else:
        log(f"  !! could not unmount {mnt}: {r.stderr.strip()}")
        return
    # fusefat writes the FAT back when it unmounts; wait until the mount is gone
    for _ in range(100):
        if not os.path.ismount(mnt):
            break
        time.sleep(0.05)
    if mnt in MOUNTS:
        MOUNTS.remove(mnt)


@atexit.register
def _unmount_all():
    _cleanup()  # (atexit runs this first) our processes must not hold files on the mount
    for m in list(MOUNTS):
        try:
            unmount(m)
        except Exception:
            pass


class Medium:
    """Where a stick lives: a plain directory on the local disk ("dir"), or a fresh FAT32 image
    mounted with fusefat ("fat")."""

    def __init__(self, kind, base):
        self.kind, self.base = kind, base
        self.path = os.path.join(base, "mnt" if kind == "fat" else "stick")
        self.img = os.path.join(base, "stick.img")

    def setup(self):
        os.makedirs(self.base, exist_ok=True)
        if self.kind == "dir":
            shutil.rmtree(self.path, ignore_errors=True)
            os.makedirs(self.path)
            return self
        unmount(self.path)
        if os.path.exists(self.img):
            os.remove(self.img)
        subprocess.run(["truncate", "-s", C["stick_fat_size"], self.img], check=True)
        subprocess.run(["mkfs.vfat", "-F", "32", "-n", "BENCHSTICK", self.img], check=True,
                       stdout=subprocess.DEVNULL)
        os.makedirs(self.path, exist_ok=True)
        # fusefat forks into the background; it goes away with the unmount
        subprocess.run(["fusefat", "-o", "rw+", self.img, self.path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        MOUNTS.append(self.path)
        for _ in range(100):
            if os.path.ismount(self.path):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"fusefat did not mount {self.img} on {self.path}")

    def teardown(self):
        if self.kind == "fat":
            unmount(self.path)
            try:
                os.remove(self.img)
            except OSError:
                pass
        else:
            shutil.rmtree(self.path, ignore_errors=True)


def stick_media():
    ok, why = fat_available()
    if not ok:
        note = f"the FAT32 stick was not measured: {why}; plain directories only"
        if note not in RESULTS["meta"].setdefault("notes", []):
            RESULTS["meta"]["notes"].append(note)
            log("  " + note)
        return ["dir"]
    return ["dir", "fat"]


def run_ru(cmd, env=None, log_path=None, timeout=None, cwd=None):
    """Runs cmd to completion; returns (seconds, returncode, rusage, output). The rusage comes
    from wait4: ru_oublock * 512 is the child's write_bytes of /proc/PID/io (bytes it caused to be
    written to block devices, counted when the page is dirtied), summed over its threads."""
    out_path = (log_path or os.path.join(BENCH_DIR, "run")) + ".last"
    with open(out_path, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                             start_new_session=True)
        CHILDREN.append(p)
        killed = []

        def kill():
            killed.append(1)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(timeout, kill) if timeout else None
        if timer:
            timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        if timer:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
        CHILDREN.remove(p)
    text = open(out_path, "rb").read().decode("utf-8", "replace")
    if log_path:
        with open(log_path, "a") as f:
            f.write(f"$ {' '.join(cmd)}  # {dt:.3f} s, exit {p.returncode}\n{text}")
    if killed:
        raise TimeoutError(f"{' '.join(cmd[:3])} did not finish within {timeout:.0f} s (killed)")
    return dt, p.returncode, ru, text


def sent_count(text):
    """The `N sent` of `briefcase sync`'s report line (summed over mirrors)."""
    import re
    return sum(int(x) for x in re.findall(r"(\d+) sent", text))


def cpu_of(ru):
    return round(ru.ru_utime + ru.ru_stime, 3)


class StickMachine:
    """A briefcase "machine" (own XDG dirs) with a folder SRC and one mirror: a stick on a
    Medium, or a plain `dir` mirror (for reference)."""

    def __init__(self, work, src, target):
        self.work, self.src, self.target = work, src, target
        os.makedirs(work, exist_ok=True)
        self.env = briefcase_env(os.path.join(work, "state"))
        self.log = os.path.join(work, "briefcase.log")

    def first_sync(self, timeout):
        """init + mirror add + sync; returns ({phase: seconds}, files sent)."""
        phases, sent = {}, 0
        for ph, cmd in (("init", [BRIEFCASE_BIN, "init", self.src]),
                        ("mirror_add", [BRIEFCASE_BIN, "mirror", "add", self.src, self.target, "--name", "s"]),
                        ("sync", [BRIEFCASE_BIN, "sync", self.src])):
            dt, rc, ru, text = run_ru(cmd, env=self.env, log_path=self.log, timeout=timeout)
            if rc != 0:
                raise RuntimeError(f"`briefcase {cmd[1]}` exited {rc}: {text.strip()[-400:]}")
            phases[ph] = dt
            if ph == "sync":
                sent = sent_count(text)
        return phases, sent

    def sync(self, timeout):
        """One `briefcase sync`; returns (seconds, rusage, files sent)."""
        dt, rc, ru, text = run_ru([BRIEFCASE_BIN, "sync", self.src], env=self.env, log_path=self.log,
                                  timeout=timeout)
        if rc != 0:
            raise RuntimeError(f"`briefcase sync` exited {rc}: {text.strip()[-400:]}")
        return dt, ru, sent_count(text)


def stick_tree(n):
    """Small-file tree of n files (1-8 KiB, 100 per dir, like the bg workload's), kept in data/."""
    proto = os.path.join(BENCH_DIR, "data", f"stick-tree-{n}")
    if not os.path.isdir(proto):
        log(f"generating stick-tree-{n}")
        make_tree(proto + ".part", n, max(1, n // 100), lambda rng, k: rng.randrange(KiB, 8 * KiB), 20 + n,
                  fanout=10)
        os.rename(proto + ".part", proto)
    return proto


def rewrite_files(root, files, k, seed):
    """Rewrites k of `files` (relative paths) with new random content of 1-8 KiB, as an editor
    saving in place would; the same seed gives the same files and bytes. Returns the paths."""
    rng = random.Random(seed)
    picked = sorted(rng.sample(files, k))
    for rel in picked:
        write_file(os.path.join(root, rel), rng.randbytes(rng.randrange(KiB, 8 * KiB)))
    return picked


def reconcile_key(k, n):
    return f"stick_reconcile_{k}_of_{n}"


def run_stick_reconcile():
    """`briefcase sync` to a stick after k files of an n-file tree changed, against unison
    (two-way, archive from an earlier sync) and `rsync -a --files-from` of the changed files."""
    media = stick_media()
    scenarios = [(C["stick_files"], [C["stick_changes_few"], C["stick_changes"]]),
                 (C["stick_files_big"], [C["stick_changes"]])]
    RESULTS["meta"]["stick_reconcile_scenarios"] = [[n, ks] for n, ks in scenarios]
    tmo = C["stick_timeout"]
    for n, ks in scenarios:
        proto = stick_tree(n)
        src_manifest = manifest(proto)
        files = sorted(p for p, v in src_manifest.items() if v != "d")
        base = os.path.join(BENCH_DIR, "stick", f"reconcile-{n}")
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        tools = []
        if "briefcase" in TOOLS:
            tools += [f"briefcase-stick-{m}" for m in media] + ["briefcase-dir"]
        tools += [t for t in ("unison", "rsync") if t in TOOLS]
        ctx = {}
        made = []  # media set up, torn down at the end whatever happened
        l0 = load_now()
        # 1. every tool gets its own copy of the tree and an initial sync (not timed here)
        for tool in tools:
            tb = os.path.join(base, tool)
            src, work = os.path.join(tb, "src"), os.path.join(tb, "work")
            os.makedirs(work)
            subprocess.run(["cp", "-a", proto, src], check=True)
            os.sync()
            lg = os.path.join(work, f"{tool}.log")
            try:
                t0 = time.perf_counter()
                if tool.startswith("briefcase"):
                    if tool == "briefcase-dir":
                        medium, target = None, os.path.join(tb, "dst")
                    else:
                        medium = Medium(tool.rsplit("-", 1)[1], os.path.join(tb, "medium"))
                        made.append(medium)
                        medium.setup()
                        target = "stick:" + medium.path
                    m = StickMachine(work, src, target)
                    phases, sent = m.first_sync(tmo)
                    ctx[tool] = {"machine": m, "medium": medium, "src": src}
                    extra = {f"initial_{k}": v for k, v in phases.items()}
                elif tool == "unison":
                    dst = os.path.join(tb, "dst")
                    env = unison_env(work)
                    cmd = ["unison", src, dst] + UNISON_OPTS + ["-logfile", os.path.join(work, "unison.log")]
                    dt, rc, ru, text = run_ru(cmd, env=env, log_path=lg, timeout=tmo)
                    if rc != 0:
                        raise RuntimeError(f"unison exited {rc}: {text.strip()[-400:]}")
                    ctx[tool] = {"cmd": cmd, "env": env, "src": src, "dst": dst, "log": lg}
                    extra = {}
                else:
                    dst = os.path.join(tb, "dst")
                    dt, rc, ru, text = run_ru(["rsync", "-a", src + "/", dst + "/"], log_path=lg, timeout=tmo)
                    if rc != 0:
                        raise RuntimeError(f"rsync exited {rc}: {text.strip()[-400:]}")
                    ctx[tool] = {"src": src, "dst": dst, "log": lg}
                    extra = {}
                t_init = time.perf_counter() - t0
                log(f"stick-reconcile {n} files: initial sync of {tool} {t_init:.1f} s")
                for k in ks:
                    record(reconcile_key(k, n), tool, initial_sync_secs=t_init, **extra)
            except Exception as e:
                for k in ks:
                    note_error(reconcile_key(k, n), tool, f"initial sync failed: {e}")
        # 2. rounds: the same k files rewritten in every tool's copy, then each tool timed,
        #    tools interleaved round by round
        for k in ks:
            key = reconcile_key(k, n)
            for rep in range(C["stick_reps"]):
                seed = n * 1000003 + k * 101 + rep
                for tool in tools:
                    if tool not in ctx:
                        continue
                    c = ctx[tool]
                    picked = rewrite_files(c["src"], files, k, seed)
                    time.sleep(0.05)
                    os.sync()
                    try:
                        if tool.startswith("briefcase"):
                            dt, ru, sent = c["machine"].sync(tmo)
                            if sent != k:
                                note_error(key, tool, f"rep {rep}: sync reported {sent} sent, expected {k}")
                            record(key, tool, samples=[dt], cpu=[cpu_of(ru)], write_bytes=[ru.ru_oublock * 512])
                        else:
                            if tool == "unison":
                                cmd, env = c["cmd"], c["env"]
                            else:
                                lst = os.path.join(base, tool, "work", f"changed-{k}-{rep}.txt")
                                with open(lst, "w") as f:
                                    f.write("".join(p + "\n" for p in picked))
                                cmd, env = ["rsync", "-a", f"--files-from={lst}", c["src"] + "/", c["dst"] + "/"], None
                            dt, rc, ru, text = run_ru(cmd, env=env, log_path=c["log"], timeout=tmo)
                            if rc != 0:
                                raise RuntimeError(f"{tool} exited {rc}: {text.strip()[-300:]}")
                            t0 = time.perf_counter()
                            os.sync()
                            ts = time.perf_counter() - t0
                            have = manifest(c["dst"])
                            want = manifest(c["src"])
                            if have != want:
                                note_error(key, tool, f"rep {rep}: mirror differs: " + diff_summary(want, have))
                            record(key, tool, samples=[dt], cpu=[cpu_of(ru)], with_sync=[dt + ts])
                        log(f"  {key}/{tool} rep {rep}: {dt:.3f} s")
                    except Exception as e:
                        note_error(key, tool, f"rep {rep}: {e}")
        RESULTS["events"].append({"session": f"stick-reconcile-{n}", "tool": "all", "load": load_since(l0)})
        for tool in tools:
            keep_logs(os.path.join(base, tool, "work"), f"stick-reconcile-{n}-{tool}")
        for medium in made:
            medium.teardown()
        shutil.rmtree(base, ignore_errors=True)


def listing(root):
    """{relpath: (size, sha256)} of every file under root."""
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while True:
                    b = f.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
            out[os.path.relpath(p, root)] = (os.path.getsize(p), h.hexdigest())
    return out


def stick_part(rel):
    parts = rel.split("/")
    if "chunks" in parts:
        return "chunks"
    if "segments" in parts:
        return "segments"
    name = parts[-1]
    if name.startswith("state."):
        return "roots"
    if name.startswith("keys."):
        return "keys"
    return "other"


def listing_diff(before, after):
    """Bytes and files written between two listings: every write on the stick is a whole new
    file or an atomic replacement, so a file that is new or whose content changed was written
    whole."""
    d = {"bytes": 0, "files_new": 0, "files_changed": 0, "files_removed": 0, "by_part": {}}
    for rel, (size, h) in after.items():
        old = before.get(rel)
        if old is None:
            d["files_new"] += 1
        elif old[1] != h:
            d["files_changed"] += 1
        else:
            continue
        d["bytes"] += size
        part = stick_part(rel)
        d["by_part"][part] = d["by_part"].get(part, 0) + size
    d["files_removed"] = sum(1 for rel in before if rel not in after)
    return d


def rsync_stats(text):
    import re
    out = {}
    for key, pat in (("sent", r"Total bytes sent: ([\d,.]+)"), ("received", r"Total bytes received: ([\d,.]+)"),
                     ("literal", r"Literal data: ([\d,.]+)"), ("matched", r"Matched data: ([\d,.]+)"),
                     ("transferred", r"Number of regular files transferred: ([\d,.]+)")):
        m = re.search(pat, text)
        if m:
            out[key] = int(m.group(1).replace(",", "").replace(".", ""))
    return out


def run_stick_bytes():
    """Bytes written to a stick for a 4 KiB change in a big file, against what rsync's delta
    algorithm sends for the same change."""
    mib = C["stick_bytes_mib"]
    proto = os.path.join(BENCH_DIR, "data", f"stick-bytes-{mib}m")
    if not os.path.isdir(proto):
        log(f"generating stick-bytes-{mib}m")
        os.makedirs(proto + ".part")
        make_binary(os.path.join(proto + ".part", "disk.img"), mib * MiB, 21)
        rng = random.Random(22)
        for i in range(8):
            write_file(os.path.join(proto + ".part", f"note{i}.txt"), rng.randbytes(rng.randrange(KiB, 8 * KiB)))
        os.rename(proto + ".part", proto)
    base = os.path.join(BENCH_DIR, "stick", "bytes")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    tmo = C["stick_timeout"]
    size = mib * MiB
    key = "stick_bytes"
    ctx = {}
    l0 = load_now()
    if "briefcase" in TOOLS:
        tb = os.path.join(base, "briefcase")
        src = os.path.join(tb, "src")
        os.makedirs(tb)
        subprocess.run(["cp", "-a", proto, src], check=True)
        medium = Medium("dir", os.path.join(tb, "medium")).setup()
        m = StickMachine(os.path.join(tb, "work"), src, "stick:" + medium.path)
        os.sync()
        try:
            phases, _ = m.first_sync(tmo)
            lst = listing(medium.path)
            record(key, "briefcase-stick-dir", initial_secs=sum(phases.values()),
                   initial_stick_bytes=sum(s for s, _ in lst.values()), initial_stick_files=len(lst))
            ctx["briefcase-stick-dir"] = {"m": m, "medium": medium, "src": src, "listing": lst}
        except Exception as e:
            note_error(key, "briefcase-stick-dir", f"initial sync failed: {e}")
    if "rsync" in TOOLS:
        tb = os.path.join(base, "rsync")
        src, dst = os.path.join(tb, "src"), os.path.join(tb, "dst")
        os.makedirs(os.path.join(tb, "work"))
        subprocess.run(["cp", "-a", proto, src], check=True)
        lg = os.path.join(tb, "work", "rsync.log")
        dt, rc, ru, text = run_ru(["rsync", "-a", src + "/", dst + "/"], log_path=lg, timeout=tmo)
        if rc != 0:
            note_error(key, "rsync", f"initial copy: exit {rc}: {text[-300:]}")
        else:
            ctx["rsync"] = {"src": src, "dst": dst, "log": lg}
    rng = random.Random(23)
    for rep in range(C["stick_bytes_reps"]):
        off = (size // 10 + rng.randrange(size * 8 // 10)) // 4096 * 4096
        new = rng.randbytes(4096)
        time.sleep(1.05)  # rsync's quick check compares mtimes; never two edits in one second
        for tool, c in ctx.items():
            fd = os.open(os.path.join(c["src"], "disk.img"), os.O_WRONLY)
            os.pwrite(fd, new, off)
            os.close(fd)
            os.sync()
            try:
                if tool == "rsync":
                    cmd = ["rsync", "-a", "--no-whole-file", "--stats", c["src"] + "/", c["dst"] + "/"]
                    dt, rc, ru, text = run_ru(cmd, log_path=c["log"], timeout=tmo)
                    if rc != 0:
                        raise RuntimeError(f"rsync exited {rc}: {text[-300:]}")
                    st = rsync_stats(text)
                    if st.get("transferred") != 1 or "sent" not in st:
                        note_error(key, tool, f"rep {rep}: rsync did not send the file: {st}")
                        continue
                    with open(os.path.join(c["dst"], "disk.img"), "rb") as f:
                        f.seek(off)
                        if f.read(4096) != new:
                            note_error(key, tool, f"rep {rep}: the destination did not get the change")
                    record(key, tool, samples=[st["sent"]], received=[st.get("received")],
                           literal=[st.get("literal")], matched=[st.get("matched")], secs=[dt], offsets=[off])
                    log(f"  {key}/rsync rep {rep}: sent {st['sent']} B, received {st.get('received')} B")
                else:
                    dt, ru, sent = c["m"].sync(tmo)
                    after = listing(c["medium"].path)
                    d = listing_diff(c["listing"], after)
                    c["listing"] = after
                    if sent != 1:
                        note_error(key, tool, f"rep {rep}: sync reported {sent} sent, expected 1")
                    wb = ru.ru_oublock * 512
                    record(key, tool, samples=[d["bytes"]], secs=[dt], cpu=[cpu_of(ru)], write_bytes=[wb],
                           files_new=[d["files_new"]], files_changed=[d["files_changed"]],
                           files_removed=[d["files_removed"]], by_part=[d["by_part"]], offsets=[off])
                    log(f"  {key}/{tool} rep {rep}: {d['bytes']} B on the stick in {d['files_new']} new + "
                        f"{d['files_changed']} changed files {d['by_part']}, write_bytes {wb}, {dt:.3f} s")
            except Exception as e:
                note_error(key, tool, f"rep {rep}: {e}")
    RESULTS["events"].append({"session": "stick-bytes", "tool": "all", "load": load_since(l0)})
    for tool, c in ctx.items():
        keep_logs(os.path.join(base, tool if tool == "rsync" else "briefcase", "work"), f"stick-bytes-{tool}")
        if c.get("medium"):
            c["medium"].teardown()
    shutil.rmtree(base, ignore_errors=True)


def stick_first_tree(root):
    rng = random.Random(24)
    os.makedirs(root)
    total = 0
    nb, ns = C["stick_first_big"], C["stick_first_small"]
    for i in range(nb):
        d = os.path.join(root, f"big{i % 10:02d}")
        os.makedirs(d, exist_ok=True)
        sz = rng.randrange(1 * MiB, 10 * MiB)
        make_binary(os.path.join(d, f"b{i:04d}.bin"), sz, 1000 + i)
        total += sz
    for i in range(ns):
        d = os.path.join(root, f"small{i % 20:02d}")
        os.makedirs(d, exist_ok=True)
        sz = rng.randrange(KiB, 16 * KiB)
        write_file(os.path.join(d, f"s{i:04d}.txt"), rng.randbytes(sz))
        total += sz
    return total


def age_recipient():
    """An age key for the tar | age peer (made with age-keygen once)."""
    kf = os.path.join(BENCH_DIR, "stick", "age-key.txt")
    if not os.path.exists(kf):
        os.makedirs(os.path.dirname(kf), exist_ok=True)
        subprocess.run(["age-keygen", "-o", kf], check=True, capture_output=True)
    for line in open(kf):
        if line.startswith("# public key:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError(f"no public key in {kf}")


def run_stick_first():
    """First copy of ~1 GiB to a fresh stick (FAT32 image via fusefat, and a plain directory):
    briefcase (init + mirror add + sync) against `cp -r` and `tar | age`, each + `sync -f`."""
    nb, ns = C["stick_first_big"], C["stick_first_small"]
    proto = os.path.join(BENCH_DIR, "data", f"stick-first-{nb}-{ns}")
    if not os.path.isdir(proto):
        log(f"generating stick-first-{nb}-{ns}")
        stick_first_tree(proto + ".part")
        os.rename(proto + ".part", proto)
    src_manifest = manifest(proto)
    nfiles = sum(1 for v in src_manifest.values() if v != "d")
    total = sum(v for v in src_manifest.values() if v != "d")
    RESULTS["meta"]["stick_first_tree"] = {"files": nfiles, "bytes": total}
    log(f"stick-first tree: {nfiles} files, {total / MiB:.0f} MiB")
    media = stick_media()
    tools = (["briefcase"] if "briefcase" in TOOLS else []) + ["cp", "tar-age"]
    have_age = shutil.which("age") and shutil.which("age-keygen")
    recipient = age_recipient() if have_age else None
    base = os.path.join(BENCH_DIR, "stick", "first")
    tmo = C["stick_timeout"]
    for rep in range(C["stick_first_reps"]):
        for kind in media:
            key = f"stick_first_{kind}"
            for tool in tools:
                shutil.rmtree(base, ignore_errors=True)
                os.makedirs(base)
                work = os.path.join(base, "work")
                os.makedirs(work)
                lg = os.path.join(work, f"{tool}.log")
                if tool == "tar-age" and not have_age:
                    note_error(key, tool, "age / age-keygen not installed")
                    continue
                src = proto
                if tool == "briefcase":
                    # init writes the folder marker into the tree: a copy, read from the page
                    # cache like the others' source
                    src = os.path.join(base, "tree")
                    subprocess.run(["cp", "-a", proto, src], check=True)
                medium = Medium(kind, os.path.join(base, "medium")).setup()
                os.sync()
                l0 = load_now()
                try:
                    if tool == "briefcase":
                        m = StickMachine(work, src, "stick:" + medium.path)
                        phases, sent = m.first_sync(tmo)
                        t = sum(phases.values())
                        if sent != len(src_manifest):  # files and directories
                            note_error(key, tool, f"rep {rep}: sync reported {sent} sent, expected "
                                                  f"{len(src_manifest)}")
                        extra = {f"phase_{k}": [v] for k, v in phases.items()}
                    elif tool == "cp":
                        t1, rc, _, text = run_ru(["cp", "-r", proto, medium.path + "/"], log_path=lg, timeout=tmo)
                        if rc != 0:
                            raise RuntimeError(f"cp exited {rc}: {text[-300:]}")
                        t2, rc, _, text = run_ru(["sync", "-f", medium.path], log_path=lg, timeout=tmo)
                        t = t1 + t2
                        have = manifest(os.path.join(medium.path, os.path.basename(proto)))
                        if have != src_manifest:
                            note_error(key, tool, f"rep {rep}: copy differs: " + diff_summary(src_manifest, have))
                        extra = {"phase_cp": [t1], "phase_syncfs": [t2]}
                    else:
                        out = os.path.join(medium.path, "tree.tar.age")
                        sh = (f"set -o pipefail; tar -c -C {os.path.dirname(proto)} {os.path.basename(proto)} "
                              f"| age -r {recipient} > {out} && sync -f {medium.path}")
                        t, rc, _, text = run_ru(["bash", "-c", sh], log_path=lg, timeout=tmo)
                        if rc != 0:
                            raise RuntimeError(f"tar | age exited {rc}: {text[-300:]}")
                        if os.path.getsize(out) < total:
                            note_error(key, tool, f"rep {rep}: {out} has only {os.path.getsize(out)} bytes")
                        extra = {}
                    t0 = time.perf_counter()
                    os.sync()
                    ts = time.perf_counter() - t0
                    record(key, tool, samples=[t], with_sync=[t + ts], load=[load_since(l0)], **extra)
                    log(f"  {key}/{tool} rep {rep}: {t:.2f} s ({total / MiB / t:.1f} MiB/s), "
                        f"+sync(1) {ts:.2f} s")
                except Exception as e:
                    note_error(key, tool, f"rep {rep}: {e}")
                finally:
                    keep_logs(work, f"stick-first-{kind}-{tool}-{rep}")
                    medium.teardown()
    shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------------------------------------


def cmd_out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        return f"({e})"


def machine_facts():
    m = RESULTS["meta"]
    m["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
    m["nproc"] = os.cpu_count()
    m["kernel"] = platform.release()
    m["fs"] = cmd_out(["df", "--output=fstype", BENCH_DIR]).splitlines()[-1].strip()
    m["df"] = cmd_out(["df", "-hT", BENCH_DIR]).splitlines()[-1:]
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    m["cpu"] = model
    try:
        m["mem_gib"] = round(int(open("/proc/meminfo").readline().split()[1]) / 1024 / 1024, 1)
    except Exception:
        pass
    m["os"] = cmd_out(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"])
    m["versions"] = {
        "briefcase": cmd_out([BRIEFCASE_BIN, "--version"]),
        "rsync": cmd_out(["rsync", "--version"]).splitlines()[0] if shutil.which("rsync") else None,
        "unison": cmd_out(["unison", "-version"]) if shutil.which("unison") else None,
        "lsyncd": cmd_out(["lsyncd", "-version"]).splitlines()[0] if shutil.which("lsyncd") else None,
        "age": cmd_out(["age", "--version"]) if shutil.which("age") else None,
        "fusefat": (cmd_out(["dpkg-query", "-W", "-f", "${Version}", "fusefat"]) or "installed")
        if shutil.which("fusefat") else None,
        "tar": cmd_out(["tar", "--version"]).splitlines()[0] if shutil.which("tar") else None,
        "cp": cmd_out(["cp", "--version"]).splitlines()[0] if shutil.which("cp") else None,
        "python": platform.python_version(),
    }
    m["briefcase_rev"] = os.environ.get("BENCH_REV_DESC", "")
    m["quick"] = QUICK
    m["workloads"] = WORKLOADS
    m["tools"] = TOOLS


def main():
    global BRIEFCASE_BIN
    if not BRIEFCASE_BIN:
        sys.exit("set BRIEFCASE_BIN (bench/run.sh does)")
    BRIEFCASE_BIN = os.path.abspath(BRIEFCASE_BIN)
    os.makedirs(BENCH_DIR, exist_ok=True)
    # the stick workloads use only briefcase, unison and rsync of these
    used = TOOLS if any(w in ALL_WORKLOADS for w in WORKLOADS) else [t for t in TOOLS if t in ("unison", "rsync")]
    missing = [t for t in used if t != "briefcase" and not shutil.which(t.split("-")[0])]
    if missing:
        sys.exit(f"missing tools: {missing} (bench/run.sh installs them)")
    machine_facts()
    save_results()
    t0 = time.perf_counter()
    steps = []
    if "edit" in WORKLOADS or "bin" in WORKLOADS:
        steps.append(run_small_session)
    if "edit" in WORKLOADS or "burst" in WORKLOADS:
        steps.append(run_bg_session)
    if "first" in WORKLOADS:
        steps.append(run_oneshot)
    if "idle" in WORKLOADS:
        steps.append(run_idle)
    if "stick-reconcile" in WORKLOADS:
        steps.append(run_stick_reconcile)
    if "stick-bytes" in WORKLOADS:
        steps.append(run_stick_bytes)
    if "stick-first" in WORKLOADS:
        steps.append(run_stick_first)
    for s in steps:
        t = time.perf_counter()
        try:
            s()
        except Exception as e:  # a harness bug in one step must not lose the others
            import traceback
            traceback.print_exc()
            RESULTS.setdefault("harness_errors", []).append(f"{s.__name__}: {e!r}")
        RESULTS["meta"].setdefault("step_secs", {})[s.__name__] = round(time.perf_counter() - t, 1)
        save_results()
    RESULTS["meta"]["total_secs"] = round(time.perf_counter() - t0, 1)
    save_results()
    log(f"done in {time.perf_counter() - t0:.0f} s; results in {RESULTS_PATH}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
