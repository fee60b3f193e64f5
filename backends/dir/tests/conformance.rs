//! The briefcase-mirror conformance suite against `DirMirror`:
//! - `posix`: a temp dir on whatever file system holds it (detected profile);
//! - `fat_forced`: the FAT profile forced on a temp dir (name mapping, case collisions, no
//!   symlinks/modes, 4 GiB limit) so it runs without a FAT driver;
//! - `fat_image`: a real FAT32 image mounted with `fusefat` (needs root, `mkfs.vfat`, `fusefat`
//!   and /dev/fuse; each case prints why and passes when they are missing). The recipe is the one
//!   in `tests/support/usb.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use briefcase_dir::{DirMirror, Profile};
use briefcase_mirror::testkit::LocalFixture;

briefcase_mirror::conformance!(
    posix,
    LocalFixture::tempdir(|root| Box::new(DirMirror::new(root)))
);
briefcase_mirror::conformance!(
    fat_forced,
    LocalFixture::tempdir(|root| Box::new(DirMirror::with_profile(root, Profile::Fat)))
);
briefcase_mirror::conformance!(fat_image, optional fat_mount::fixture().await);

/// The fixture of `fat_image`.
mod fat_mount {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use briefcase_dir::{DirMirror, Profile};
    use briefcase_mirror::testkit::Fixture;
    use briefcase_mirror::Mirror;

    /// A FAT32 image mounted with fusefat at `mnt`, the mirror root being `mnt/root`. Vanishing
    /// unmounts the image (an unplugged stick: its mount point stays, empty); coming back mounts
    /// it again. (fusefat loses a directory's content when renaming it, so the temp-dir fixture's
    /// rename trick cannot be used here.)
    pub struct FatFixture {
        mirror: DirMirror,
        img: PathBuf,
        mnt: PathBuf,
        root: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl Drop for FatFixture {
        fn drop(&mut self) {
            let _ = Command::new("fusermount").arg("-u").arg(&self.mnt).output();
        }
    }

    impl Fixture for FatFixture {
        fn mirror(&self) -> &dyn Mirror {
            &self.mirror
        }
        fn root(&self) -> Option<&Path> {
            Some(&self.root)
        }
        fn set_root_present(&self, present: bool) -> std::io::Result<()> {
            if present {
                if self.root.exists() {
                    std::fs::remove_dir(&self.root)?; // an empty dir in the bare mount point
                }
                plug(&self.img, &self.mnt).map_err(std::io::Error::other)
            } else {
                let out = Command::new("fusermount")
                    .arg("-u")
                    .arg(&self.mnt)
                    .output()?;
                if !out.status.success() {
                    return Err(std::io::Error::other(
                        String::from_utf8_lossy(&out.stderr).into_owned(),
                    ));
                }
                Ok(())
            }
        }
        fn ascii_only_names(&self) -> bool {
            true // fusefat 0.1a refuses non-ASCII names with EPERM
        }
        fn rename_may_hide_target(&self) -> bool {
            true // fusefat 0.1a renames over a file by unlinking it first
        }
    }

    fn missing_prerequisite() -> Option<String> {
        #[allow(unsafe_code)]
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Some("not running as root".into());
        }
        for tool in ["mkfs.vfat", "fusefat", "fusermount"] {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
                .unwrap_or(false);
            if !found {
                return Some(format!(
                    "`{tool}` is not installed (apt-get install dosfstools fusefat fuse3)"
                ));
            }
        }
        if !Path::new("/dev/fuse").exists() {
            return Some("/dev/fuse is missing".into());
        }
        None
    }

    fn is_mounted(mnt: &Path) -> bool {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| {
                m.lines()
                    .any(|l| l.contains(&format!(" {} ", mnt.display())))
            })
            .unwrap_or(false)
    }

    fn plug(img: &Path, mnt: &Path) -> Result<(), String> {
        let out = Command::new("fusefat")
            .args(["-o", "rw+"])
            .arg(img)
            .arg(mnt)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "fusefat failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        for _ in 0..100 {
            if is_mounted(mnt) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err("fusefat did not mount within 2 s".into())
    }

    fn make() -> Result<FatFixture, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let img = dir.path().join("stick.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(96 << 20))
            .map_err(|e| e.to_string())?;
        // No volume label: fusefat would show it as a file in the root.
        let out = Command::new("mkfs.vfat")
            .args(["-F", "32"])
            .arg(&img)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "mkfs.vfat failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        plug(&img, &mnt)?;
        let root = mnt.join("root");
        let fx = FatFixture {
            mirror: DirMirror::new(root.clone()),
            img,
            mnt,
            root,
            _dir: dir,
        };
        std::fs::create_dir(&fx.root).map_err(|e| e.to_string())?;
        Ok(fx)
    }

    /// `Some(fixture)` on a real FAT mount, or `None` after saying why not. With
    /// `BRIEFCASE_REQUIRE_FAT` set, a missing prerequisite fails instead (for CI).
    pub async fn fixture() -> Option<FatFixture> {
        let required = std::env::var_os("BRIEFCASE_REQUIRE_FAT").is_some();
        if let Some(why) = missing_prerequisite() {
            assert!(!required, "BRIEFCASE_REQUIRE_FAT is set but {why}");
            eprintln!(
                "skipped: real-FAT conformance needs root, mkfs.vfat, fusefat and /dev/fuse: {why}"
            );
            return None;
        }
        match tokio::task::spawn_blocking(make).await.unwrap() {
            Ok(fx) => {
                assert_eq!(
                    fx.mirror.profile(),
                    Profile::Fat,
                    "fusefat must be detected as FAT"
                );
                let caps = fx.mirror.capabilities();
                assert!(caps.case_insensitive && !caps.symlinks && !caps.modes && !caps.rename);
                Some(fx)
            }
            Err(e) => {
                assert!(!required, "BRIEFCASE_REQUIRE_FAT is set but {e}");
                eprintln!("skipped: cannot mount a FAT image with fusefat: {e}");
                None
            }
        }
    }
}
