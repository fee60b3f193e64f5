//! briefcase: keeps one person's working folders identical across the places they work.
//!
//! ```text
//!  editor save ─► watch ─► scan ─► journal (SQLite: OSN, manifest, knowledge)
//!                                      │
//!                      reconcile (plan: pure ─► apply: effects) ─► Mirror backends (dir, …)
//! ```
//!
//! Module map:
//! - [`journal`]: the local replica's durable state (invariant 3).
//! - [`replica`]: the local folder: marker, journal, scan → journal batches (invariant 4).
//! - [`scan`]: tree walk, stat compare, blake3 + FastCDC, ignore rules.
#![deny(missing_docs)]

pub mod journal;
pub mod replica;
pub mod scan;
