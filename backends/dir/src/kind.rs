//! The `dir` backend in the registry ([`KIND`]): targets `/path` or `dir:/path`.

use std::path::PathBuf;

use briefcase_mirror::registry::{
    absolute_path, Address, BackendKind, OpenContext, OpenError, OpenedMirror, Place, Plain, Target,
};
use briefcase_mirror::STATE_DIR;

use crate::{DirMirror, MARKER};

/// The `dir` backend in the registry: `dir:/path`, and every target without a scheme.
pub static KIND: DirKind = DirKind;

/// The [`BackendKind`] of the `dir` backend (see [`KIND`]).
#[derive(Debug)]
pub struct DirKind;

impl BackendKind for DirKind {
    fn scheme(&self) -> &'static str {
        "dir"
    }

    fn takes_bare_paths(&self) -> bool {
        true
    }

    fn syntax(&self) -> &'static str {
        "a directory (`/path` or `dir:/path`)"
    }

    fn parse(&self, address: &str) -> Result<Address, String> {
        let path = absolute_path(address)?;
        Ok(Address {
            text: path.display().to_string(),
            place: Some(Place {
                path,
                // ROOT/.briefcase/folder-id
                marker_depth: 1,
                plain: true,
            }),
        })
    }

    fn open(
        &self,
        target: &Target,
        _ctx: &OpenContext,
    ) -> Result<Box<dyn OpenedMirror>, OpenError> {
        let root = match target.place() {
            Some(p) => p.path.clone(),
            None => PathBuf::from(target.address()),
        };
        Ok(Plain::boxed(DirMirror::new(root)))
    }

    /// The root, once it holds the state directory (its data is a plain tree there).
    fn watch_root(&self, target: &Target) -> Option<PathBuf> {
        let root = &target.place()?.path;
        root.join(STATE_DIR)
            .join(MARKER)
            .exists()
            .then(|| root.clone())
    }
}
