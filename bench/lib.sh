# Shared by run.sh and profile.sh: builds briefcase (unless BRIEFCASE_BIN is set) and exports
# BRIEFCASE_BIN and BENCH_REV_DESC. Needs REPO, BENCH_DIR, BENCH_REV and say().
if [[ -z "${BRIEFCASE_BIN:-}" ]]; then
    if [[ "$BENCH_REV" == "worktree" ]]; then
        say "building the working tree of $REPO"
        (cd "$REPO" && cargo build --release --quiet)
        BRIEFCASE_BIN="$REPO/target/release/briefcase"
        desc="$(git -C "$REPO" rev-parse --short HEAD) (working tree"
        if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- src backends Cargo.toml Cargo.lock)" ]]; then
            desc+=" with uncommitted changes)"
        else
            desc+=", clean)"
        fi
    else
        sha="$(git -C "$REPO" rev-parse "$BENCH_REV")"
        short="${sha:0:7}"
        srcdir="$BENCH_DIR/build/src-$short"
        if [[ ! -f "$srcdir/Cargo.toml" ]]; then
            say "exporting $BENCH_REV ($short) to $srcdir"
            rm -rf "$srcdir" && mkdir -p "$srcdir"
            git -C "$REPO" archive --format=tar "$sha" | tar -x -C "$srcdir"
        fi
        # its own target dir unless CARGO_TARGET_DIR names one (shared with other builds)
        target="${CARGO_TARGET_DIR:-$BENCH_DIR/build/target}"
        say "building $short (release) in $target"
        (cd "$srcdir" && CARGO_TARGET_DIR="$target" cargo build --release --quiet --bin briefcase)
        cp "$target/release/briefcase" "$BENCH_DIR/build/briefcase-$short"
        BRIEFCASE_BIN="$BENCH_DIR/build/briefcase-$short"
        desc="commit $short ($(git -C "$REPO" log -1 --format=%s "$sha" | cut -c1-60)…), clean export"
    fi
    export BENCH_REV_DESC="$desc"
fi
export BRIEFCASE_BIN
say "briefcase: $BRIEFCASE_BIN (${BENCH_REV_DESC:-given})"

