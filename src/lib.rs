//! briefcase: keeps one person's working folders identical across the places they work.
//!
//! ```text
//!  editor save ─► watch ─► scan ─► journal (SQLite: OSN, manifest, knowledge)
//!                                      │
//!                      reconcile (plan: pure ─► apply: effects) ─► Mirror backends (dir, …)
//! ```
//!
//! Module map:
//! - [`backends`]: the registered backends, one line each; targets are parsed and mirrors
//!   opened through it, never by naming a backend.
//! - [`config`]: TOML config and XDG dirs, mirror targets.
//! - [`daemon`]: every folder under watch, the control socket, mirrors coming and going (also
//!   the machinery of `briefcase watch`).
//! - [`journal`]: the local replica's durable state (invariant 3).
//! - [`reconcile`]: the engine: plan (pure), apply (effects), conflict names.
//! - [`replica`]: the local folder: marker, journal, scan → journal batches (invariant 4).
//! - [`scan`]: tree walk, stat compare, blake3 + FastCDC, ignore rules.
//! - [`vcs`]: git, Mercurial and Subversion working copies as units: concurrent refs kept under `refs/briefcase/`.
//! - [`watch`]: inotify events → debounced subtree rescan hints; git-lock holds; watch budget with polling fallback.
#![deny(missing_docs)]

pub mod backends;
pub mod config;
pub mod daemon;
pub mod journal;
pub mod reconcile;
pub mod replica;
pub mod scan;
pub mod vcs;
pub mod watch;
