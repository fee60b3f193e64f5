//! [`Fixture`]: what the conformance suite (`testkit`, feature) runs against: a fresh mirror
//! over a fresh, empty root, and a way to make that root vanish and come back. Outside the
//! feature so that a backend crate can implement it for its own type (the in-memory backend is
//! its own fixture) without pulling the suite into its build.

use std::path::Path;

use crate::Mirror;

/// A fresh mirror over a fresh, empty (existing) root, plus whatever keeps that root alive.
pub trait Fixture {
    /// The mirror under test.
    fn mirror(&self) -> &dyn Mirror;

    /// The local directory the mirror stores its data tree in, when there is one, for
    /// out-of-band checks (temp files hidden from `list`, a reader polling a file during `put`,
    /// nothing written outside the root). `None` for remote or in-memory backends.
    fn root(&self) -> Option<&Path> {
        None
    }

    /// Makes the root vanish (`false`: the disk is unplugged, its content kept aside) or come back
    /// (`true`) exactly as it was.
    ///
    /// # Errors
    /// I/O errors of the fixture.
    fn set_root_present(&self, present: bool) -> std::io::Result<()>;

    /// Whether the test medium can store only ASCII names (e.g. FAT through the `fusefat` driver);
    /// the name cases then expect [`crate::MirrorError::Refused`] instead of a round trip.
    fn ascii_only_names(&self) -> bool {
        false
    }

    /// Whether the test medium's rename-over-a-file leaves a moment with no file at the target
    /// (fusefat unlinks, then links). Readers must still never see partial content; a missing
    /// target is then counted and reported instead of failing the atomicity case.
    fn rename_may_hide_target(&self) -> bool {
        false
    }
}

impl<F: Fixture + ?Sized> Fixture for Box<F> {
    fn mirror(&self) -> &dyn Mirror {
        (**self).mirror()
    }
    fn root(&self) -> Option<&Path> {
        (**self).root()
    }
    fn set_root_present(&self, present: bool) -> std::io::Result<()> {
        (**self).set_root_present(present)
    }
    fn ascii_only_names(&self) -> bool {
        (**self).ascii_only_names()
    }
    fn rename_may_hide_target(&self) -> bool {
        (**self).rename_may_hide_target()
    }
}
