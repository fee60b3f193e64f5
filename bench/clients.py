#!/usr/bin/env python3
"""git operations in a watched folder (issue 8): how long after each operation the mirror of
`briefcase watch` is equal to the folder (names never replicated left out) with `git fsck
--full` clean on the mirror's copy, against the time `rsync -a --delete FOLDER/ MIRROR/` takes
to bring an up-to-date mirror up to date after the same operation.

Run through bench/clients.sh (which builds briefcase and exports BRIEFCASE_BIN). Standard
library only. Environment: BRIEFCASE_BIN, BENCH_DIR (/tmp/briefcase-bench),
BENCH_CLIENTS_REPS (5), BENCH_CLIENTS_FILES (1500), BENCH_CLIENTS_TIMEOUT (120 s per
operation), BENCH_CLIENTS_OUT (the markdown file to write), BENCH_REV_DESC (which briefcase),
BENCH_BRIEFCASE_LOG (BRIEFCASE_LOG for the watch, default info).

How the briefcase time is taken: the operation (a git command) returns at t0; the mirror and the
folder are then compared every ~10 ms (file contents by blake2b, cached by stat so only changed
files are read again; directories and symlinks too); the first moment they are equal is t1, and
`git fsck --full` is then run on the mirror's copy. Clean: the sample is t1 - t0 (the fsck is a
check, not part of the latency). Not clean: polling goes on. The watch is left 1 s to settle
after each operation before the next one.
"""

import hashlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time

BIN = os.environ.get("BRIEFCASE_BIN", "")
BENCH_DIR = os.path.abspath(os.environ.get("BENCH_DIR", "/tmp/briefcase-bench"))
REPS = int(os.environ.get("BENCH_CLIENTS_REPS", "5"))
FILES = int(os.environ.get("BENCH_CLIENTS_FILES", "1500"))
TIMEOUT = float(os.environ.get("BENCH_CLIENTS_TIMEOUT", "120"))
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.environ.get("BENCH_CLIENTS_OUT") or os.path.join(
    REPO, "bench", "results", f"clients-{time.strftime('%Y-%m-%d')}.md")
WORK = os.path.join(BENCH_DIR, "clients")


def log(*a):
    print(time.strftime("%H:%M:%S"), "clients.py:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# names never replicated (as tests/support/clients.rs)

EDITOR_SUFFIXES = (".swp", ".swo", ".swx", "~", ".tmp", "___jb_tmp___", "___jb_old___")


def editor_temp(name):
    return (name.endswith(EDITOR_SUFFIXES) or name.startswith(".#") or name == "4913"
            or (len(name) >= 2 and name.startswith("#") and name.endswith("#"))
            or (name.startswith(".~lock.") and name.endswith("#")))


def git_transient(rel):
    i = rel.rfind("/.git/")
    if i >= 0:
        g = rel[i + 6:]
    elif rel.startswith(".git/"):
        g = rel[5:]
    else:
        return False
    name = g.rsplit("/", 1)[-1]
    if name.endswith(".lock") or name == "gc.pid":
        return True
    if g.startswith("objects/"):
        o = g[len("objects/"):]
        if o.startswith("incoming-"):
            return True
        if any(c.startswith(("tmp_", ".tmp-")) for c in o.split("/")):
            return True
    return False


def skipped(rel):
    name = rel.rsplit("/", 1)[-1]
    return (rel in (".briefcase", ".briefcase-folder") or rel.startswith(".briefcase/")
            or name.startswith(".briefcase-tmp-") or editor_temp(name) or git_transient(rel))


class Tree:
    """A tree's state (path -> ("D",) | ("L", target) | ("F", size, digest)), with contents
    hashed again only for files whose stat changed."""

    def __init__(self, root):
        self.root = root
        self.cache = {}

    def state(self):
        out = {}
        stack = [""]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(os.path.join(self.root, d) if d else self.root)
            except OSError:
                continue
            with it:
                for e in it:
                    rel = f"{d}/{e.name}" if d else e.name
                    if skipped(rel):
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if e.is_symlink():
                        try:
                            out[rel] = ("L", os.readlink(e.path))
                        except OSError:
                            pass
                    elif e.is_dir(follow_symlinks=False):
                        out[rel] = ("D",)
                        stack.append(rel)
                    else:
                        key = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
                        c = self.cache.get(rel)
                        if c is None or c[0] != key:
                            try:
                                with open(e.path, "rb") as f:
                                    h = hashlib.blake2b(f.read(), digest_size=16).digest()
                            except OSError:
                                continue
                            c = (key, h)
                            self.cache[rel] = c
                        out[rel] = ("F", st.st_size, c[1])
        return out


def difference(a, b, limit=5):
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return f"{len(keys)} differ, e.g. {keys[:limit]}"


# ---------------------------------------------------------------------------------------------
# processes: only ours, stopped by PID

CHILDREN = []


def git_env(home):
    env = dict(os.environ)
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
              "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_PARAMETERS"):
        env.pop(k, None)
    env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"), GIT_CONFIG_NOSYSTEM="1",
               GIT_AUTHOR_NAME="Bench", GIT_AUTHOR_EMAIL="bench@example.org",
               GIT_COMMITTER_NAME="Bench", GIT_COMMITTER_EMAIL="bench@example.org",
               GIT_EDITOR="true", GIT_TERMINAL_PROMPT="0")
    return env


GIT_ENV = None


def git(repo, *args, check=True):
    r = subprocess.run(["git", "-C", repo, *args], env=GIT_ENV, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo} failed: {r.stdout}{r.stderr}")
    return r


def fsck_clean(repo):
    r = git(repo, "-c", "safe.directory=*", "fsck", "--full", "--no-dangling", "--no-progress",
            check=False)
    return r.returncode == 0 and not (r.stdout + r.stderr).strip(), (r.stdout + r.stderr).strip()


class Watch:
    def __init__(self, folder, mirror, state, log_path):
        env = dict(os.environ)
        for k, sub in (("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                       ("XDG_RUNTIME_DIR", "run")):
            env[k] = os.path.join(state, sub)
            os.makedirs(env[k], mode=0o700, exist_ok=True)
        env["BRIEFCASE_NAME"] = "bench"
        env["BRIEFCASE_LOG"] = os.environ.get("BENCH_BRIEFCASE_LOG", "info")
        env["NO_COLOR"] = "1"
        self.log_path = log_path
        out = open(log_path, "ab")
        self.p = subprocess.Popen([BIN, "watch", folder, mirror], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        CHILDREN.append(self.p)

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait()
        if self.p in CHILDREN:
            CHILDREN.remove(self.p)


def cleanup():
    for p in CHILDREN:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------------------------------------
# the repository

WORDS = ("fn let mut self mirror journal replica sync path entry state version vector knowledge "
         "stamp apply plan push pull rename match Some None Ok Err return impl struct pub use the "
         "a of to is when file tree folder").split()


def text(rng, lines):
    return "".join(" " * (4 * rng.randrange(4))
                   + " ".join(rng.choice(WORDS) for _ in range(3 + rng.randrange(9))) + "\n"
                   for _ in range(lines))


def copy_some(src, dst, budget, per_tree):
    """Copies up to per_tree regular files of src into dst; returns the budget left."""
    copied = 0
    for d, dirs, files in os.walk(src):
        dirs[:] = sorted(x for x in dirs if x not in ("target", ".git"))
        for f in sorted(files):
            if budget <= 0 or copied >= per_tree:
                return budget
            p = os.path.join(d, f)
            if (os.path.islink(p) or not os.path.isfile(p) or os.path.getsize(p) > 256 * 1024
                    or f in (".gitignore", ".gitattributes") or editor_temp(f)):
                continue
            to = os.path.join(dst, os.path.relpath(p, src))
            os.makedirs(os.path.dirname(to), exist_ok=True)
            shutil.copyfile(p, to)
            copied += 1
            budget -= 1
    return budget


def make_template(dst, want):
    """~want files of real source (this repository's trees, then crates of the cargo registry,
    then generated text), committed on main, and a branch alt differing in ~500 files."""
    budget = want
    for t in ("src", "backends", "docs", "tests"):
        budget = copy_some(os.path.join(REPO, t), os.path.join(dst, t), budget, 10 ** 9)
    reg = os.path.join(os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo")), "registry", "src")
    if os.path.isdir(reg):
        for idx in sorted(os.listdir(reg)):
            for c in sorted(os.listdir(os.path.join(reg, idx))):
                if budget <= 0:
                    break
                budget = copy_some(os.path.join(reg, idx, c), os.path.join(dst, "vendor", c), budget, 40)
    rng = random.Random(1)
    i = 0
    while budget > 0:
        p = os.path.join(dst, "gen", f"mod{i // 50:02}", f"file{i:04}.rs")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text(rng, 20 + rng.randrange(200)))
        i += 1
        budget -= 1
    git(dst, "init", "-q", "-b", "main")
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "initial import")
    tracked = sorted(git(dst, "ls-files").stdout.split("\n")[:-1])
    git(dst, "checkout", "-q", "-b", "alt")
    step = max(1, len(tracked) // 150)
    gone = tracked[::step][:150]
    git(dst, "rm", "-q", "--", *gone)
    for f in tracked[1::max(1, len(tracked) // 200)][:200]:
        if f not in gone:
            with open(os.path.join(dst, f), "w") as fh:
                fh.write(text(rng, 5 + rng.randrange(40)))
    for k in range(150):
        p = os.path.join(dst, "alt-only", f"part{k % 10}", f"new{k}.rs")
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as fh:
            fh.write(text(rng, 5 + rng.randrange(60)))
    git(dst, "add", "-A")
    git(dst, "commit", "-q", "-m", "alt: hundreds of files differ")
    git(dst, "checkout", "-q", "main")
    return tracked


# ---------------------------------------------------------------------------------------------
# the operations (the git workflow of issue 8)


def edit(repo, files, tag):
    for f in files:
        with open(os.path.join(repo, f), "a") as fh:
            fh.write(f"// {tag}\n")


def steps(tracked):
    """(name, function of the repo, measured?) in order; the same for both tools."""
    feat = [tracked[i] for i in range(7, len(tracked), max(1, len(tracked) // 15))][:15]
    mains = [t for t in tracked if t.startswith("docs/")][:2] or tracked[-2:]

    def commits(repo, first, n):
        for i in range(first, first + n):
            edit(repo, feat[3 * i:3 * i + 3], f"feature change {i}")
            git(repo, "commit", "-q", "-a", "-m", f"feature {i}")

    return [
        ("checkout -b feature", lambda r: git(r, "checkout", "-q", "-b", "feature"), False),
        ("commit", lambda r: commits(r, 0, 1), True),
        ("four more commits", lambda r: commits(r, 1, 4), False),
        ("checkout", lambda r: git(r, "checkout", "-q", "main"), True),
        ("a commit on main", lambda r: (edit(r, mains, "on main"),
                                        git(r, "commit", "-q", "-a", "-m", "on main")), False),
        ("rebase", lambda r: git(r, "rebase", "-q", "feature"), True),
        ("gc --prune=now", lambda r: git(r, "gc", "-q", "--prune=now"), True),
        ("branch create/switch/delete", lambda r: (git(r, "checkout", "-q", "-b", "other"),
                                                   git(r, "checkout", "-q", "main"),
                                                   git(r, "branch", "-q", "-D", "other")), True),
        ("branch switch (~500 files)", lambda r: git(r, "checkout", "-q", "alt"), True),
        ("checkout main again", lambda r: git(r, "checkout", "-q", "main"), False),
    ]


def wait_converged(folder_t, mirror_t, mirror_repo, t0, watch):
    """Seconds from t0 until the trees are equal with fsck clean on the mirror; None on timeout."""
    last = ""
    while time.perf_counter() - t0 < TIMEOUT:
        if not watch.alive():
            raise RuntimeError("briefcase watch exited")
        a = folder_t.state()
        b = mirror_t.state()
        t1 = time.perf_counter()
        if a == b:
            ok, out = fsck_clean(mirror_repo)
            if ok:
                return t1 - t0
            last = f"fsck: {out[:300]}"
        else:
            last = difference(a, b)
        time.sleep(0.01)
    log(f"  timed out after {TIMEOUT:.0f} s: {last}")
    return None


def run_briefcase(rep, template, tracked, samples):
    d = os.path.join(WORK, f"bc-{rep}")
    shutil.rmtree(d, ignore_errors=True)
    folder, mirror = os.path.join(d, "folder"), os.path.join(d, "mirror")
    os.makedirs(folder)
    shutil.copytree(template, os.path.join(folder, "proj"), symlinks=True)
    log_path = os.path.join(BENCH_DIR, "logs", f"clients-watch-{rep}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    open(log_path, "w").close()
    w = Watch(folder, mirror, os.path.join(d, "state"), log_path)
    ft, mt = Tree(folder), Tree(mirror)
    repo, mrepo = os.path.join(folder, "proj"), os.path.join(mirror, "proj")
    try:
        first = wait_converged(ft, mt, mrepo, time.perf_counter(), w)
        if first is None:
            raise RuntimeError("the first sync did not converge")
        time.sleep(1)
        for name, op, measured in steps(tracked):
            op(repo)
            t0 = time.perf_counter()
            dt = wait_converged(ft, mt, mrepo, t0, w)
            if measured:
                samples.setdefault(name, []).append(dt)
                log(f"  briefcase rep {rep + 1}: {name}: "
                    + (f"{dt:.3f} s" if dt is not None else "TIMEOUT"))
            time.sleep(1)
        conflicts = sum(1 for line in open(log_path, errors="replace")
                        if "conflict: both versions kept" in line)
        if conflicts:
            log(f"  briefcase rep {rep + 1}: the log has {conflicts} conflict line(s): {log_path}")
    finally:
        w.stop()
        shutil.rmtree(d, ignore_errors=True)


def run_rsync(rep, template, tracked, samples):
    d = os.path.join(WORK, f"rs-{rep}")
    shutil.rmtree(d, ignore_errors=True)
    folder, mirror = os.path.join(d, "folder"), os.path.join(d, "mirror")
    os.makedirs(folder)
    shutil.copytree(template, os.path.join(folder, "proj"), symlinks=True)
    repo = os.path.join(folder, "proj")

    def rsync():
        t0 = time.perf_counter()
        subprocess.run(["rsync", "-a", "--delete", folder + "/", mirror + "/"], check=True)
        return time.perf_counter() - t0

    try:
        rsync()
        for name, op, measured in steps(tracked):
            op(repo)
            dt = rsync()
            if measured:
                samples.setdefault(name, []).append(dt)
                log(f"  rsync rep {rep + 1}: {name}: {dt:.3f} s")
        ok, out = fsck_clean(os.path.join(mirror, "proj"))
        if not ok:
            log(f"  rsync rep {rep + 1}: fsck on its mirror: {out[:300]}")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    global GIT_ENV
    if not BIN or not os.access(BIN, os.X_OK):
        sys.exit("clients.py: set BRIEFCASE_BIN to the briefcase binary (bench/clients.sh does)")
    for tool in ("git", "rsync"):
        if shutil.which(tool) is None:
            sys.exit(f"clients.py: {tool} is not installed")
    shutil.rmtree(WORK, ignore_errors=True)
    home = os.path.join(WORK, "home")
    os.makedirs(os.path.join(home, ".config"))
    GIT_ENV = git_env(home)
    template = os.path.join(WORK, "template")
    tracked = make_template(template, FILES)
    n_files = sum(len(f) for _, _, f in os.walk(template))
    log(f"template repository: {len(tracked)} tracked files, {n_files} files with .git")
    bc, rs = {}, {}
    try:
        for rep in range(REPS):
            log(f"rep {rep + 1} of {REPS}")
            run_briefcase(rep, template, tracked, bc)
            run_rsync(rep, template, tracked, rs)
    finally:
        cleanup()

    def med(xs):
        ok = [x for x in xs if x is not None]
        return statistics.median(ok) if ok else None

    rows = []
    for name, _, measured in steps(tracked):
        if not measured:
            continue
        b, r = med(bc.get(name, [])), med(rs.get(name, []))
        fails = sum(1 for x in bc.get(name, []) if x is None)
        ratio = f"{b / r:.1f}×" if b is not None and r else "–"
        cell = (f"{b:.3f}" if b is not None else "–") + (f" ({fails} timed out)" if fails else "")
        rows.append(f"| {name} | {cell} | {f'{r:.3f}' if r is not None else '–'} | {ratio} |")
    load = open("/proc/loadavg").read().split()[:3]
    text_out = "\n".join([
        f"# git operations in a watched folder (issue 8) — {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"briefcase: {os.environ.get('BENCH_REV_DESC', BIN)}; `briefcase watch FOLDER MIRROR` "
        f"(release), a `dir` mirror on the same disk. Repository: {len(tracked)} tracked files "
        f"of real source ({n_files} files with `.git`), a branch `alt` differing in ~500 files. "
        f"Median of {REPS} runs, each on a fresh copy.",
        "",
        "- **briefcase**: from the end of the git command to the first moment the mirror equals "
        "the folder (names never replicated left out: git's locks, `gc.pid`, temp objects, "
        "editor temps) with `git fsck --full` clean on the mirror's copy (the fsck itself not "
        "counted); polled every ~10 ms.",
        "- **rsync**: wall time of `rsync -a --delete FOLDER/ MIRROR/` right after the same "
        "operation on its own copy, the mirror up to date before it.",
        "",
        "| operation | briefcase median s | rsync median s | ratio |",
        "|---|---|---|---|",
        *rows,
        "",
        "Samples (s):",
        "",
        *[f"- {name}: briefcase {[round(x, 3) if x is not None else None for x in bc.get(name, [])]}, "
          f"rsync {[round(x, 3) for x in rs.get(name, [])]}"
          for name, _, m in steps(tracked) if m],
        "",
        f"Machine: {os.cpu_count()} CPUs, load average at the end {' '.join(load)}.",
        "",
    ])
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        f.write(text_out)
    print(text_out)
    log(f"written to {OUT}")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
