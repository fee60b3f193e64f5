//! For fuzz targets (feature `testkit`): a global allocator that notes, per thread, the largest
//! single allocation and the sum of all allocations made while a closure runs, so that a target
//! can tell a length field that makes a decoder allocate gigabytes from an honest decode. A test
//! binary installs it with
//! `#[global_allocator] static WATCH: briefcase_mirror::alloc_watch::Watch = briefcase_mirror::alloc_watch::Watch;`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

/// The allocator: the system's, with every allocation noted.
#[derive(Debug)]
pub struct Watch;

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    let _ = TOTAL.try_with(|t| t.set(t.get().saturating_add(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; `note` only updates
// thread-local `Cell`s with const initialisers (no allocation, no destructor).
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f`; returns its result, the largest single allocation and the sum of all allocations
/// (bytes) it made on this thread. Only meaningful where [`Watch`] is the global allocator.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    let r = f();
    (r, LARGEST.with(|l| l.get()), TOTAL.with(|t| t.get()))
}

/// Runs `f`, panicking (test code) when a single allocation exceeds what `input_len` bytes can
/// honestly decode to: 1 MiB (serde's cautious preallocation) plus `per_byte` bytes per input
/// byte.
///
/// # Panics
/// When that bound is exceeded.
#[allow(clippy::panic)]
pub fn bounded_by<R>(input_len: usize, per_byte: usize, f: impl FnOnce() -> R) -> R {
    let (r, largest, _) = measure(f);
    let limit = (1 << 20) + per_byte * input_len;
    assert!(
        largest <= limit,
        "a {input_len}-byte input made a single allocation of {largest} bytes (limit {limit})"
    );
    r
}

/// [`bounded_by`] with the project's usual 64 bytes per input byte.
///
/// # Panics
/// As [`bounded_by`].
pub fn bounded<R>(input_len: usize, f: impl FnOnce() -> R) -> R {
    bounded_by(input_len, 64, f)
}
