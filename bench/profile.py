#!/usr/bin/env python3
"""Where does briefcase's time go? Runs briefcase alone (no peers) and prints:

1. `strace -c -f` of a first sync (init + mirror add + sync) and of a re-sync with nothing
   changed, on the first-sync tree of bench.py;
2. per-save phase timings of `briefcase watch` with BRIEFCASE_LOG=debug on the 10,000-file
   folder: save -> 'local changes journaled' (debounce + scan + journal) -> mirror has it;
3. `strace -c -f` of `briefcase watch` over 10 saves, and over an idle window on the same folder;
4. `strace -c -f` of one `briefcase sync` pushing 5,000 new files, and of one deleting them;
5. RSS of `briefcase watch` on the idle tree (smaps_rollup), strace of its idle window, and the
   peak RSS of a one-shot no-op sync of that tree;
6. (PROFILE=stick, not in the default) the stick: a no-op sync and a sync after 1,000 changes in
   20,000 files, and a first copy, on the FAT32 image and on a plain directory, with the time in
   syscalls split by where it went (chunks, catalog, roots, the stick's directories, local disk).

Same environment as bench.py (BRIEFCASE_BIN, BENCH_DIR, BENCH_QUICK, sizes); run through
bench/profile.sh. Output goes to stdout and to BENCH_DIR/profile/.
"""

import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

B = None
OUT = None


def strace_summary(path, top=14):
    """The first `top` rows of an strace -c table, plus its total line."""
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return "(no strace output)"
    head = [ln for ln in lines[:2 + top]]
    total = [ln for ln in lines if ln.strip().endswith("total")]
    return "\n".join(head + ["..."] + total)


def oneshot():
    proto = os.path.join(bench.BENCH_DIR, "data", f"first-{bench.C['first_files']}-{bench.C['first_mib']}m")
    if not os.path.isdir(proto):
        bench.first_sync_tree(proto + ".part")
        os.rename(proto + ".part", proto)
    base = os.path.join(OUT, "oneshot")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    src, dst = os.path.join(base, "src"), os.path.join(base, "dst")
    subprocess.run(["cp", "-a", proto, src], check=True)
    env = bench.briefcase_env(os.path.join(base, "state"))
    os.sync()
    for name, cmd in (("init", [B, "init", src]), ("mirror-add", [B, "mirror", "add", src, dst, "--name", "m"]),
                      ("first-sync", [B, "sync", src]), ("resync", [B, "sync", src])):
        out = os.path.join(OUT, f"strace-{name}.txt")
        t0 = time.perf_counter()
        r = subprocess.run(["strace", "-f", "-c", "-o", out] + cmd, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        print(f"\n## `briefcase {' '.join(cmd[1:2])}` ({name}) under strace: {dt:.2f} s, exit {r.returncode}")
        print(strace_summary(out))
        t0 = time.perf_counter()
    # without strace, for the wall time of the same re-sync
    ts = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([B, "sync", src], env=env, capture_output=True)
        ts.append(time.perf_counter() - t0)
    print(f"\nre-sync without strace: median {statistics.median(ts) * 1000:.0f} ms of {len(ts)}")
    env2 = dict(env, BRIEFCASE_LOG="debug")
    r = subprocess.run([B, "sync", src], env=env2, capture_output=True, text=True)
    open(os.path.join(OUT, "resync-debug.log"), "w").write(r.stderr)
    # 5,000 new files pushed, then deleted: one sync each, once under strace, once timed
    n = bench.C["burst_files"]
    for rnd, traced in ((0, "delete"), (1, "create")):
        base_b = os.path.join(src, f"burst{rnd}")
        for k in range(n):
            d = os.path.join(base_b, f"d{k % 50:03d}")
            os.makedirs(d, exist_ok=True)
            bench.write_file(os.path.join(d, f"n{k:05d}.txt"), os.urandom(1024 + (k * 37) % 7168))
        os.sync()
        for step in ("create", "delete"):
            if step == "delete":
                shutil.rmtree(base_b)
                os.sync()
            cmd = [B, "sync", src]
            if step == traced:
                out = os.path.join(OUT, f"strace-sync-{step}-{n}.txt")
                cmd = ["strace", "-f", "-c", "-o", out] + cmd
            t0 = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            dt = time.perf_counter() - t0
            print(f"\n## `briefcase sync` after {n:,} files were {step}d ({'under strace' if step == traced else 'timed'}): "
                  f"{dt:.2f} s, exit {r.returncode}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
            if step == traced:
                print(strace_summary(out))
    shutil.rmtree(base, ignore_errors=True)


def idle_memory():
    """RSS of briefcase watch on the idle tree, where it goes (smaps_rollup), and the peak RSS
    of a one-shot no-op sync of the same tree (state decode without the watcher)."""
    nf, nd = bench.C["idle_files"], bench.C["idle_dirs"]
    proto = os.path.join(bench.BENCH_DIR, "data", f"idle-{nf}-{nd}")
    if not os.path.isdir(proto):
        print("(run bench.py's idle workload first: it generates the tree)")
        return
    base = os.path.join(OUT, "idle")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    src, dst, work = (os.path.join(base, x) for x in ("src", "dst", "work"))
    subprocess.run(["cp", "-a", proto, src], check=True)
    w = bench.Watcher("briefcase", src, dst, work)
    w.start()
    try:
        t = w.wait_ready(900)
        time.sleep(3)
        rollup = open(f"/proc/{w.proc.pid}/smaps_rollup").read()
        status = {k: v.strip() for k, _, v in (ln.partition(":") for ln in open(f"/proc/{w.proc.pid}/status"))}
        print(f"\n## `briefcase watch` on {nf:,} files / {nd:,} dirs, 3 s after the initial sync ({t:.1f} s)")
        print(f"VmRSS {status.get('VmRSS')}, VmHWM {status.get('VmHWM')}, RssAnon {status.get('RssAnon')}, "
              f"RssFile {status.get('RssFile')}, Threads {status.get('Threads')}")
        print("smaps_rollup: " + ", ".join(ln.split()[0] + " " + ln.split()[1] + " kB" for ln in rollup.splitlines()[1:]
                                            if ln.split()[0] in ("Rss:", "Anonymous:", "Private_Dirty:", "Shared_Clean:")))
        st_out = os.path.join(OUT, "strace-watch-idle-100k.txt")
        st = subprocess.Popen(["strace", "-f", "-c", "-p", str(w.proc.pid), "-o", st_out],
                              stderr=subprocess.DEVNULL)
        time.sleep(35)
        os.kill(st.pid, 2)
        st.wait()
        print(f"\n## `strace -c -f` of that watcher over the next 35 s (nothing changes in the tree)")
        print(strace_summary(st_out))
    finally:
        w.stop()
    env = bench.briefcase_env(os.path.join(work, "state"))
    p = subprocess.Popen([B, "sync", src], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    _, status, ru = os.wait4(p.pid, 0)
    print(f"\n## one-shot `briefcase sync` of the same tree, nothing changed: {time.perf_counter() - t0:.2f} s, "
          f"peak RSS {ru.ru_maxrss / 1024:.1f} MiB")
    shutil.rmtree(base, ignore_errors=True)


def log_times(path):
    """[(unix time, message)] of a tracing log (UTC timestamps with microseconds)."""
    out = []
    rx = re.compile(r"^\x1b?\[?[0-9;]*m?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z\s+(\S+)\s+(.*)$")
    for line in open(path, errors="replace"):
        line = re.sub(r"\x1b\[[0-9;]*m", "", line)
        m = rx.match(line)
        if not m:
            continue
        ts = datetime.datetime.fromisoformat(m.group(1)[:26]).replace(tzinfo=datetime.timezone.utc).timestamp()
        out.append((ts, m.group(3)))
    return out


def live():
    proto = os.path.join(bench.BENCH_DIR, "data", f"bg-{bench.C['bg_files']}")
    if not os.path.isdir(proto):
        print("(run bench.py's edit workload first: it generates the 10,000-file folder)")
        return
    for variant in ("debug", "strace"):
        base = os.path.join(OUT, "live")
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        src, dst, work = (os.path.join(base, x) for x in ("src", "dst", "work"))
        subprocess.run(["cp", "-a", proto, src], check=True)
        os.sync()
        if variant == "debug":
            os.environ["BENCH_BRIEFCASE_LOG"] = "debug"
            bench.C["briefcase_log"] = "debug"
        else:
            bench.C["briefcase_log"] = ""
        w = bench.Watcher("briefcase", src, dst, work)
        w.start()
        try:
            w.wait_ready(600)
            time.sleep(1.0)
            pid = w.proc.pid
            if variant == "strace":
                st_out = os.path.join(OUT, "strace-watch-10-saves.txt")
                st = subprocess.Popen(["strace", "-f", "-c", "-p", str(pid), "-o", st_out])
                time.sleep(1.0)
            saves = []
            content = bytearray(open(os.path.join(src, "notes.txt"), "rb").read())
            for i in range(10):
                line = (i * 997) % (len(content) // 64)
                new = f"profile save {i:04d}".ljust(63, "x").encode() + b"\n"
                content[line * 64:(line + 1) * 64] = new
                tmp = os.path.join(src, ".goutputstream-PROF%02d" % i)
                with open(tmp, "wb") as f:
                    f.write(content)
                    f.flush()
                    os.fsync(f.fileno())
                os.rename(tmp, os.path.join(src, "notes.txt"))
                t_wall, t0 = time.time(), time.perf_counter()
                t1 = bench.wait_region(os.path.join(dst, "notes.txt"), line * 64, new, len(content), 30, w.proc)
                saves.append((t_wall, t1 - t0))
                time.sleep(1.1)
            if variant == "strace":
                os.kill(st.pid, 2)
                st.wait()
                print("\n## `strace -c -f` of `briefcase watch` over 10 saves of notes.txt in the "
                      f"{bench.C['bg_files']:,}-file folder (includes the idle time between saves)")
                print(strace_summary(st_out))
                st_out = os.path.join(OUT, "strace-watch-idle.txt")
                st = subprocess.Popen(["strace", "-f", "-c", "-p", str(pid), "-o", st_out])
                time.sleep(35)
                os.kill(st.pid, 2)
                st.wait()
                print(f"\n## `strace -c -f` of `briefcase watch` idle for 35 s on the same folder")
                print(strace_summary(st_out))
            else:
                w.stop()
                ev = log_times(w.log)
                print(f"\n## phases of a save (BRIEFCASE_LOG=debug, {bench.C['bg_files']:,}-file folder), ms")
                print("| save | → journaled | → 'synced' logged | → mirror has it (poller) |")
                print("|---|---|---|---|")
                for t_wall, lat in saves:
                    j = next((t for t, m in ev if t >= t_wall - 0.001 and "journaled" in m), None)
                    s = next((t for t, m in ev if t >= t_wall - 0.001 and "synced" in m and "journaled" not in m), None)
                    f = (lambda x: f"{(x - t_wall) * 1000:.1f}" if x else "?")
                    print(f"| {datetime.datetime.fromtimestamp(t_wall).strftime('%H:%M:%S.%f')[:-3]} | {f(j)} | "
                          f"{f(s)} | {lat * 1000:.1f} |")
        finally:
            w.stop()
            bench.keep_logs(work, f"profile-{variant}")
        shutil.rmtree(base, ignore_errors=True)


SYSCALL_RX = re.compile(r"^(\d+)\s+[\d:.]+\s+(?:<\.\.\. (\w+) resumed>(.*)|(\w+)\((.*))$")
WAITS = {"futex", "epoll_wait", "epoll_pwait", "poll", "ppoll", "select", "pselect6", "nanosleep",
         "clock_nanosleep", "wait4", "rt_sigtimedwait", "sched_yield", "restart_syscall"}


def stick_category(text, mnt):
    """Where a syscall went, from its arguments (strace -y prints the path of every fd)."""
    if mnt not in text:
        return "local" if "/" in text else "-"
    rest = text.split(mnt, 1)[1]
    for part in ("/chunks/", "/segments/"):
        if part in rest:
            return "stick " + part.strip("/")
    for name in ("state.", "keys.", "STICK"):
        if name in rest:
            return "stick " + name.rstrip(".")
    return "stick dirs"


def strace_by_path(path, mnt, top=16):
    """Time spent in syscalls (strace -f -y -T), by syscall and by where it went: the stick's
    chunks, segments, roots, keys, its directories, or the local disk. Waits between threads
    (futex, epoll) are left out."""
    pending = {}
    agg = {}
    for line in open(path, errors="replace"):
        m = SYSCALL_RX.match(line)
        if not m:
            continue
        pid = m.group(1)
        if m.group(2):  # resumed
            name, args = pending.pop(pid, (m.group(2), ""))
            args += m.group(3)
        else:
            name, args = m.group(4), m.group(5)
            if args.endswith("<unfinished ...>"):
                pending[pid] = (name, args)
                continue
        d = re.search(r"<([\d.]+)>\s*$", args)
        if not d or name in WAITS:
            continue
        key = (name, stick_category(args, mnt))
        n, t = agg.get(key, (0, 0.0))
        agg[key] = (n + 1, t + float(d.group(1)))
    rows = sorted(agg.items(), key=lambda kv: -kv[1][1])
    total = sum(t for _, (_, t) in rows)
    on_stick = sum(t for (_, c), (_, t) in rows if c.startswith("stick"))
    out = [f"time in syscalls (without waits between threads): {total:.2f} s, of which on the stick "
           f"{on_stick:.2f} s", "", "| syscall | where | calls | seconds | ms per call |", "|---|---|---|---|---|"]
    for (name, cat), (n, t) in rows[:top]:
        out.append(f"| {name} | {cat} | {n:,} | {t:.3f} | {t / n * 1000:.3f} |")
    return "\n".join(out)


def traced(cmd, env, name, mnt):
    """Runs cmd under strace -f -y -T -tt; prints its wall time and the by-path table."""
    out = os.path.join(OUT, f"strace-{name}.txt")
    t0 = time.perf_counter()
    r = subprocess.run(["strace", "-f", "-y", "-T", "-tt", "-o", out] + cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    last = (r.stdout.strip() or r.stderr.strip()).splitlines()[-1:] or [""]
    print(f"\n### {name}: {dt:.2f} s under strace (exit {r.returncode}; {last[0][:160]})\n")
    print(strace_by_path(out, mnt))
    os.remove(out)  # big


def timed(cmd, env):
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.perf_counter()
    _, status, ru = os.wait4(p.pid, 0)
    return time.perf_counter() - t0, ru


def stick():
    """The stick's paths: a one-shot sync after 1,000 changes in 20,000 files and a no-op sync,
    on the FAT32 image (fusefat) and on a plain directory; and a first copy (a fifth of the
    stick-first tree). Each timed without strace, then once under strace -f -y -T with the time in
    syscalls split by where they went."""
    media = bench.stick_media()
    n, k = bench.C["stick_files"], bench.C["stick_changes"]
    proto = bench.stick_tree(n)
    files = sorted(p for p, v in bench.manifest(proto).items() if v != "d")
    for kind in reversed(media):
        base = os.path.join(OUT, f"stick-{kind}")
        shutil.rmtree(base, ignore_errors=True)
        os.makedirs(base)
        src = os.path.join(base, "src")
        subprocess.run(["cp", "-a", proto, src], check=True)
        medium = bench.Medium(kind, os.path.join(base, "medium")).setup()
        try:
            m = bench.StickMachine(os.path.join(base, "work"), src, "stick:" + medium.path)
            t0 = time.perf_counter()
            m.first_sync(bench.C["stick_timeout"])
            print(f"\n## stick on {kind}: {n:,} files; initial sync {time.perf_counter() - t0:.1f} s")
            cmd = [B, "sync", src]
            for rep in range(2):
                dt, ru = timed(cmd, m.env)
                print(f"- no-op sync without strace: {dt:.2f} s (CPU {ru.ru_utime + ru.ru_stime:.2f} s)")
            traced(cmd, m.env, f"{kind}: no-op sync", medium.path)
            bench.rewrite_files(src, files, k, 77)
            os.sync()
            dt, ru = timed(cmd, m.env)
            print(f"\n- sync after {k:,} changes without strace: {dt:.2f} s (CPU {ru.ru_utime + ru.ru_stime:.2f} s)")
            bench.rewrite_files(src, files, k, 78)
            os.sync()
            traced(cmd, m.env, f"{kind}: sync after {k:,} changes", medium.path)
        finally:
            bench.keep_logs(os.path.join(base, "work"), f"profile-stick-{kind}")
            medium.teardown()
            shutil.rmtree(base, ignore_errors=True)
    # first copy: a fifth of the stick-first tree
    nb, ns = max(1, bench.C["stick_first_big"] // 5), max(1, bench.C["stick_first_small"] // 5)
    bench.C["stick_first_big"], bench.C["stick_first_small"] = nb, ns
    base = os.path.join(OUT, "stick-first")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    tree = os.path.join(base, "tree")
    total = bench.stick_first_tree(tree)
    for kind in reversed(media):
        for variant in ("timed", "strace"):
            subprocess.run(["rm", "-f", os.path.join(tree, ".briefcase-folder")])
            medium = bench.Medium(kind, os.path.join(base, "medium")).setup()
            try:
                m = bench.StickMachine(os.path.join(base, f"work-{kind}-{variant}"), tree, "stick:" + medium.path)
                for cmd in ([B, "init", tree], [B, "mirror", "add", tree, "stick:" + medium.path, "--name", "s"]):
                    subprocess.run(cmd, env=m.env, capture_output=True, check=True)
                os.sync()
                if variant == "timed":
                    dt, ru = timed([B, "sync", tree], m.env)
                    print(f"\n## first copy of {total / (1 << 20):.0f} MiB ({nb} big + {ns} small files) to a "
                          f"stick on {kind}: `sync` {dt:.2f} s ({total / (1 << 20) / dt:.1f} MiB/s), "
                          f"CPU {ru.ru_utime + ru.ru_stime:.2f} s")
                else:
                    traced([B, "sync", tree], m.env, f"{kind}: first copy", medium.path)
            finally:
                medium.teardown()
    shutil.rmtree(base, ignore_errors=True)


def main():
    global B, OUT
    B = os.path.abspath(os.environ["BRIEFCASE_BIN"])
    bench.BRIEFCASE_BIN = B
    OUT = os.path.join(bench.BENCH_DIR, "profile")
    os.makedirs(OUT, exist_ok=True)
    if not shutil.which("strace"):
        sys.exit("strace is needed: apt-get install -y strace")
    print(f"# briefcase profile ({os.environ.get('BENCH_REV_DESC', B)}), {time.strftime('%Y-%m-%d %H:%M')}")
    what = os.environ.get("PROFILE", "oneshot,live,idle").split(",")
    if "oneshot" in what:
        oneshot()
    if "live" in what:
        live()
    if "idle" in what:
        idle_memory()
    if "stick" in what:
        stick()


if __name__ == "__main__":
    main()
