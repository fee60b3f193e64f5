#!/usr/bin/env python3
"""Issue 8's measure: git operations in a watched folder.

A ~1,500-file git repository (this project's sources, topped up from ~/.cargo/registry/src) sits
in a folder that `briefcase watch FOLDER NAS` (the release binary, its own XDG dirs) replicates
to a plain directory. For each git operation of the issue's scenario the script measures the time
from the end of the operation until the NAS copy equals the folder (transient files left aside)
and `git fsck --full` is clean there; and, next to it, how long `rsync -a --delete FOLDER/ COPY/`
takes to bring an up-to-date copy up to date after the same operation. Median of RUNS (5).

    python3 bench/git_ops.py [--runs 5] [--bin target/release/briefcase] [--out FILE.md]

The equality check polls every 10 ms (os.walk comparing names, sizes and mtimes, then every byte
once they agree), so a briefcase time includes up to one poll plus one walk of both trees
(printed as "poll cost" with the results).
"""

import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TRANSIENT_SUFFIX = (".lock",)
TRANSIENT_NAMES = {"gc.pid"}


def transient(rel):
    parts = rel.split("/")
    name = parts[-1]
    if ".git" in parts:
        if name.endswith(TRANSIENT_SUFFIX) or name in TRANSIENT_NAMES:
            return True
        if "objects" in parts and (name.startswith("tmp_") or name.startswith(".tmp-")):
            return True
    return False


def listing(root):
    out = {}
    for d, dirs, files in os.walk(root):
        rd = os.path.relpath(d, root)
        if rd == ".":
            dirs[:] = [x for x in dirs if x != ".briefcase"]
        for f in files:
            rel = f if rd == "." else f"{rd}/{f}"
            if rel in (".briefcase-folder",) or transient(rel) or ".briefcase-tmp-" in f:
                continue
            try:
                st = os.lstat(os.path.join(d, f))
                out[rel] = (st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                pass
        for x in dirs:
            rel = x if rd == "." else f"{rd}/{x}"
            out[rel + "/"] = None
    return out


def equal(a, b):
    """Cheap first (names, sizes, mtimes: briefcase carries mtimes), then every byte."""
    la, lb = listing(a), listing(b)
    if la != lb:
        return False
    for rel, st in la.items():
        if st is None:
            continue
        try:
            if not filecmp.cmp(os.path.join(a, rel), os.path.join(b, rel), shallow=False):
                return False
        except OSError:
            return False
    return True


def git(repo, *args, check=True):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="b",
               GIT_COMMITTER_EMAIL="b@x", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null")
    return subprocess.run(["git", "-c", "safe.directory=*", *args], cwd=repo, env=env,
                          check=check, capture_output=True, text=True)


def make_repo(proj, project_root):
    os.makedirs(proj)
    for sub in ("src", "backends", "docs", "tests"):
        shutil.copytree(os.path.join(project_root, sub), os.path.join(proj, sub),
                        ignore=shutil.ignore_patterns("target"))
    n = sum(len(f) for _, _, f in os.walk(proj))
    reg = os.path.expanduser("~/.cargo/registry/src")
    crates = sorted(os.path.join(r, c) for r in (os.path.join(reg, x) for x in sorted(os.listdir(reg)))
                    for c in sorted(os.listdir(r))) if os.path.isdir(reg) else []
    for c in crates:
        if n >= 1500:
            break
        dst = os.path.join(proj, "vendor", os.path.basename(c))
        shutil.copytree(c, dst, symlinks=True)
        n = sum(len(f) for _, _, f in os.walk(proj))
    i = 0
    while n < 1500:
        with open(os.path.join(proj, f"gen{i}.txt"), "w") as f:
            f.write(f"generated {i}\n" * 40)
        i += 1
        n += 1
    git(proj, "init", "-q", "-b", "main")
    git(proj, "add", "-A")
    git(proj, "commit", "-qm", "start")
    return n


def edit(proj, k, shared=True):
    if shared:
        p = os.path.join(proj, "docs", "architecture.md")
        with open(p, "a") as f:
            f.write(f"\nbench edit {k}\n")
    with open(os.path.join(proj, f"bench{k}.txt"), "w") as f:
        f.write(f"bench {k}\n")


def operations(proj):
    """(name, prepare, operation): prepare runs before the clock, operation is what is timed."""
    state = {"k": 0}

    def nxt():
        state["k"] += 1
        return state["k"]

    def commit(shared=True):
        edit(proj, nxt(), shared)
        git(proj, "add", "-A")
        git(proj, "commit", "-qm", "bench commit")

    def prep_checkout():
        git(proj, "checkout", "-q", "-B", "feature")
        for _ in range(5):
            commit()

    def checkout_main():
        git(proj, "checkout", "-q", "main")

    def prep_rebase():
        git(proj, "checkout", "-q", "main")
        commit(shared=False)

    def rebase():
        git(proj, "rebase", "-q", "feature")

    def gc():
        git(proj, "gc", "-q", "--aggressive", "--prune=now")

    def prep_switch():
        # A branch that differs in hundreds of files: a whole vendored crate less, docs changed.
        git(proj, "checkout", "-q", "-B", "slim")
        vendor = os.path.join(proj, "vendor")
        if os.path.isdir(vendor):
            victims = sorted(os.listdir(vendor))[:3]
            for v in victims:
                shutil.rmtree(os.path.join(vendor, v))
        edit(proj, nxt())
        git(proj, "add", "-A")
        git(proj, "commit", "-qm", "slim")
        git(proj, "checkout", "-q", "main")

    def switch():
        git(proj, "checkout", "-q", "slim")

    def switch_back():
        git(proj, "checkout", "-q", "main")

    def loose_commits():
        for _ in range(20):
            commit()

    return [
        ("commit", None, commit),
        ("checkout (5 commits away)", prep_checkout, checkout_main),
        ("rebase", prep_rebase, rebase),
        ("gc --aggressive --prune=now (after 20 loose commits)", loose_commits, gc),
        ("branch switch (hundreds of files)", prep_switch, switch),
        ("branch switch back", None, switch_back),
    ]


def wait_equal(folder, nas, deadline=120):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline:
        if equal(folder, nas):
            return time.perf_counter() - t0
        time.sleep(0.01)
    raise SystemExit(f"the mirror did not converge within {deadline} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap.add_argument("--bin", default=os.path.join(root, "target", "release", "briefcase"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=root, check=True)
    results = {}
    for run in range(a.runs):
        with tempfile.TemporaryDirectory(prefix="bench-git-") as t:
            folder, nas, copy = (os.path.join(t, x) for x in ("work", "nas", "rsync"))
            proj = os.path.join(folder, "proj")
            files = make_repo(proj, root)
            env = dict(os.environ, XDG_CONFIG_HOME=f"{t}/cfg", XDG_DATA_HOME=f"{t}/data",
                       XDG_RUNTIME_DIR=f"{t}/run", BRIEFCASE_NAME="office", BRIEFCASE_LOG="warn")
            log = open(os.path.join(t, "watch.log"), "w")
            w = subprocess.Popen([a.bin, "watch", folder, nas], env=env, stdout=log, stderr=log)
            try:
                wait_equal(folder, nas)
                subprocess.run(["rsync", "-a", "--delete", f"{folder}/", f"{copy}/"], check=True)
                for name, prep, op in operations(proj):
                    if prep:
                        prep()
                        wait_equal(folder, nas)
                        subprocess.run(["rsync", "-a", "--delete", f"{folder}/", f"{copy}/"], check=True)
                    op()
                    tb = wait_equal(folder, nas)
                    fsck = git(os.path.join(nas, "proj"), "fsck", "--full", "--no-progress", check=False)
                    if fsck.returncode != 0:
                        raise SystemExit(f"{name}: git fsck on the mirror failed:\n{fsck.stderr}")
                    t0 = time.perf_counter()
                    subprocess.run(["rsync", "-a", "--delete", f"{folder}/", f"{copy}/"], check=True)
                    tr = time.perf_counter() - t0
                    results.setdefault(name, []).append((tb, tr))
                    print(f"run {run + 1}: {name}: briefcase {tb:.3f} s, rsync {tr:.3f} s", file=sys.stderr)
                t0 = time.perf_counter()
                equal(folder, nas)
                poll_cost = time.perf_counter() - t0
                conflicts = [f for _, _, fs in os.walk(t) for f in fs if ".conflict-" in f]
                if conflicts:
                    raise SystemExit(f"conflict copies: {conflicts}")
            finally:
                w.terminate()
                w.wait()
    lines = [
        f"Git operations in a watched {files}-file repository (median of {a.runs} runs; "
        "briefcase: end of the operation → mirror equal and `git fsck --full` clean; "
        "rsync: `rsync -a --delete` of the same change to an up-to-date copy)",
        "",
        "| operation | briefcase (s) | rsync -a --delete (s) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name, rs in results.items():
        b = statistics.median(x for x, _ in rs)
        r = statistics.median(y for _, y in rs)
        lines.append(f"| {name} | {b:.3f} | {r:.3f} | {b / r:.2f}× |")
    lines.append("")
    lines.append(f"Poll cost (one equality check of the equal trees, included in the briefcase "
                 f"times at most once): {poll_cost * 1000:.0f} ms.")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
