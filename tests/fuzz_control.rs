//! Fuzz target for the daemon's control socket (issue 9): one request line, as
//! `daemon::control::parse_request` decodes it, must give a request or a `bad_request` reply,
//! never a panic, a hang or an allocation far beyond the line, for any bytes up to
//! `MAX_LINE` (16 MiB). The client's side decodes the daemon's answers with the same care.
//!
//! Under `cargo test` the target replays `tests/__fuzz__/control_request/corpus/` (request lines
//! as `briefcase status`/`sync`/`conflicts` write them) and then random lines for one second;
//! `cargo bolero test` runs it under libFuzzer. docs/fuzzing.md says how to run it long.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bolero::check;
use briefcase::daemon::control::{parse_request, ErrorKind, Request, Response, MAX_LINE};

#[global_allocator]
static WATCH: briefcase_mirror::alloc_watch::Watch = briefcase_mirror::alloc_watch::Watch;

use briefcase_mirror::alloc_watch;

/// Parses `line` as the daemon does and checks the answer; returns whether it was a request.
fn check_line(line: &[u8]) -> bool {
    let (parsed, largest, _) = alloc_watch::measure(|| parse_request(line));
    // A request is a few short fields: nothing in it needs more than a copy of a string of the
    // line (regression-values-before-tag needed 16 bytes per byte of line).
    let limit = 4096 + 8 * line.len();
    assert!(
        largest <= limit,
        "a {}-byte line made a single allocation of {largest} bytes",
        line.len()
    );
    match parsed {
        Ok(req) => {
            // What the daemon understood is what a client would have sent for it.
            let again = serde_json::to_vec(&req).unwrap();
            assert_eq!(parse_request(&again).unwrap(), req);
            true
        }
        Err(Response::Error {
            kind: ErrorKind::BadRequest,
            message,
        }) => {
            // The reply is encodable (the daemon sends it back on the same connection).
            let _ = serde_json::to_vec(&Response::error(ErrorKind::BadRequest, message)).unwrap();
            false
        }
        Err(other) => panic!("unexpected reply {other:?}"),
    }
}

static REQUESTS: AtomicUsize = AtomicUsize::new(0);

#[test]
fn control_request() {
    check!(name = "control_request").for_each(|line: &[u8]| {
        if check_line(line) {
            REQUESTS.fetch_add(1, Ordering::Relaxed);
        }
        // The daemon reads up to and including the newline.
        let mut with_newline = line.to_vec();
        with_newline.push(b'\n');
        check_line(&with_newline);
        // The client's side: an answer line from the socket.
        let _ = serde_json::from_slice::<Response>(line);
    });
    // Random bytes are almost never a request: requests parsed prove the corpus was read.
    #[cfg(not(fuzzing))]
    assert!(
        REQUESTS.load(Ordering::Relaxed) >= 4,
        "the committed request lines were not run"
    );
}

/// The largest lines the daemon accepts, built to be as costly as JSON allows: each is refused
/// (or parsed) within a second (release) and allocates at most about one copy of itself at once
/// and four in all. Before `MAX_REQUEST_VALUES`, "array before the tag" took 0.7 s and
/// allocated 256 MiB at once, 512 MiB in all.
#[test]
fn control_request_at_max_line() {
    let fill = |prefix: &str, unit: &str, suffix: &str| {
        let n = (MAX_LINE - prefix.len() - suffix.len()) / unit.len();
        let mut s = String::with_capacity(MAX_LINE);
        s.push_str(prefix);
        for _ in 0..n {
            s.push_str(unit);
        }
        s.push_str(suffix);
        assert!(s.len() <= MAX_LINE);
        s.into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "long folder",
            fill(r#"{"op":"sync","folder":""#, "a", r#""}"#),
        ),
        (
            "escapes",
            fill(r#"{"op":"sync","folder":""#, r"\u00e9", r#""}"#),
        ),
        ("nesting", fill(r#"{"x":"#, "[", "")),
        (
            "array before the tag",
            fill(r#"{"x":["#, "0,", r#"0],"op":"ping"}"#),
        ),
        (
            "objects before the tag",
            fill(r#"{"x":["#, "{},", r#"{}],"op":"ping"}"#),
        ),
        (
            "strings before the tag",
            fill(r#"{"x":["#, r#""","#, r#""""],"op":"ping"}"#),
        ),
        ("keys", fill("{", r#""k":0,"#, r#""op":"ping"}"#)),
        (
            "escaped string before the tag",
            fill(r#"{"x":""#, r"\u00e9", r#"","op":"ping"}"#),
        ),
    ];
    for (what, line) in cases {
        let start = Instant::now();
        let (parsed, largest, total) = alloc_watch::measure(|| parse_request(&line));
        let took = start.elapsed();
        eprintln!(
            "{what}: {} bytes, {took:?}, largest allocation {largest}, total {total}: {}",
            line.len(),
            if parsed.is_ok() { "parsed" } else { "refused" }
        );
        assert!(
            took < Duration::from_secs(if cfg!(debug_assertions) { 20 } else { 2 }),
            "{what}: {took:?}"
        );
        assert!(
            largest <= MAX_LINE + (1 << 20) && total <= 4 * MAX_LINE,
            "{what}: a {}-byte line allocated {largest} bytes at once, {total} in all",
            line.len()
        );
    }
    // One byte more is refused before parsing.
    let too_long = vec![b' '; MAX_LINE + 1];
    assert!(parse_request(&too_long).is_err());
}

/// Writes the seed corpus: request lines exactly as the CLI's `Client::call` encodes them.
/// Run with `cargo test --test fuzz_control -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes the committed seed corpus"]
fn write_seed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/__fuzz__/control_request/corpus");
    std::fs::create_dir_all(&dir).unwrap();
    let seeds = [
        ("ping", Request::Ping),
        ("status-all", Request::Status { folder: None }),
        (
            "status",
            Request::Status {
                folder: Some("/home/me/work".into()),
            },
        ),
        (
            "sync",
            Request::Sync {
                folder: "/home/me/work".into(),
                mirror: Some("nas".into()),
                dry_run: true,
                allow_mass_delete: false,
            },
        ),
        (
            "conflicts",
            Request::Conflicts {
                folder: "/home/me/wörk".into(),
            },
        ),
    ];
    for (name, req) in seeds {
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        std::fs::write(dir.join(name), line).unwrap();
    }
}
