//! The `briefcase` command. Parses the command line, runs the subcommand, and maps errors to
//! exit codes: 0 in sync, 1 error, 2 usage (clap), 3 some mirror offline or paused, 4 conflicts or
//! deferred/failed paths remain.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    raise_open_file_limit();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BRIEFCASE_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(if args.verbose {
                "info,briefcase=debug"
            } else {
                // notify warns once per directory removed while watched (its watch is already
                // gone with it: nothing to do), which floods the log after an `rm -r`.
                "warn,notify=error,briefcase=info"
            })
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    // Without its background threads jemalloc purges only when the process allocates again: an
    // idle daemon would keep the pages of its last sync.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::debug!(error = %e, "jemalloc's background purging is unavailable");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("briefcase: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("briefcase: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime does for every
/// program): a batch holds one directory handle per directory it writes into (race-free paths,
/// `briefcase_mirror::beneath`), and the watcher one inotify watch per directory; the usual soft
/// limit of 1024 is below what a batch of 1024 files in as many directories needs.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    // `None` is "unlimited", which Linux does not take for this resource: cap at its default
    // `nr_open`.
    let max = lim.maximum.unwrap_or(1 << 20);
    if lim.current.is_some_and(|cur| cur < max) {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(max),
                maximum: lim.maximum,
            },
        );
    }
}

/// jemalloc, not glibc's malloc: a sync of a large folder allocates hundreds of MiB for a few
/// seconds, and glibc keeps what it freed in per-thread arenas for the life of the process (a
/// daemon that once synced 100,000 files held 205 MiB of freed memory, measured with heaptrack).
/// jemalloc's background threads return freed pages to the kernel within seconds (its
/// `dirty_decay_ms`, 10 s by default), so the daemon's idle footprint is what it holds, not what
/// it once held.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
