//! Hostile input (issue 9): scripted attackers against the real binary and the project's crates.
//! Each case is refused with an error naming the folder, mirror and path; nothing is applied locally
//! and nothing is written outside a root.
//!
//! - `local`: what a writable NAS or another user of the machine can do — a forged knowledge
//!   vector (case 3), setuid and world-writable modes from a mirror (4), temp files readable by
//!   others while a file is pulled (5), journal and config readable by others (6), a FIFO or
//!   `/dev/zero` as a mirror's state files (7).
//! - `race`: a parent directory swapped for a symlink while briefcase writes in it, on the NAS
//!   and in the local folder (9).
//! - `stick`: what whoever finds the stick can do — swap its keys (1), inject a recipient (2),
//!   crash the reader with a crafted keys file (8).
#![allow(clippy::unwrap_used)]
mod local;
mod race;
mod stick;
#[path = "../support/mod.rs"]
mod support;
