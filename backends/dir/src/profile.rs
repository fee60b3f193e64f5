//! File-system profiles (DESIGN.md, "File-system profiles") and their detection: `statfs` gives
//! the file-system magic; for FUSE mounts the fstype column of `/proc/self/mountinfo` (and for a
//! bare `fuseblk`, the boot sector of the device) tells FAT from exFAT from anything else.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use briefcase_mirror::Capabilities;

/// Largest file FAT12/16/32 can hold, in bytes (4 GiB − 1).
pub const FAT_MAX_FILE: u64 = 0xFFFF_FFFF;
/// Granularity of FAT and exFAT modification times as briefcase treats them, in ns (2 s).
pub const FAT_MTIME_NS: u64 = 2_000_000_000;

/// How a [`crate::DirMirror`] adapts to the file system under its root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A POSIX file system (ext4, xfs, btrfs, NFS, …): names are bytes, symlinks and modes kept.
    Posix,
    /// FAT12/16/32 (`vfat`, `msdos`, `fusefat`): no symlinks or modes, 2 s mtimes, names compared
    /// without case, forbidden characters mapped, files up to 4 GiB − 1.
    Fat,
    /// exFAT: as [`Profile::Fat`] but without the 4 GiB limit.
    ExFat,
}

impl Profile {
    /// What a mirror with this profile supports.
    pub fn capabilities(self) -> Capabilities {
        match self {
            Profile::Posix => Capabilities::default(),
            Profile::Fat | Profile::ExFat => Capabilities {
                symlinks: false,
                modes: false,
                mtime_granularity_ns: FAT_MTIME_NS,
                case_insensitive: true,
                max_file_size: (self == Profile::Fat).then_some(FAT_MAX_FILE),
                mtime_dst_shift: true,
                maps_names: true,
                ..Capabilities::default()
            },
        }
    }

    /// Whether names are mapped with [`crate::fatname`] and compared without case.
    pub fn is_fat_like(self) -> bool {
        self != Profile::Posix
    }
}

/// A detected profile plus quirks of the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detected {
    /// The profile.
    pub profile: Profile,
    /// The medium is mounted with the `fusefat` FUSE driver (0.1a), which stores only ASCII
    /// names (anything else fails with EPERM), resets a file's mtime when renaming it, and loses
    /// a directory's content when renaming the directory. Names are then refused up front,
    /// mtimes re-applied after the atomic rename, and [`briefcase_mirror::Mirror::rename`]
    /// declared unsupported.
    pub fusefat: bool,
}

impl Detected {
    /// A profile without driver quirks.
    pub fn plain(profile: Profile) -> Self {
        Detected {
            profile,
            fusefat: false,
        }
    }

    /// The profile's capabilities, less what the driver breaks.
    pub fn capabilities(self) -> Capabilities {
        let mut caps = self.profile.capabilities();
        if self.fusefat {
            caps.rename = false;
        }
        caps
    }
}

const MSDOS_SUPER_MAGIC: i64 = 0x4d44;
const EXFAT_SUPER_MAGIC: i64 = 0x2011_bab0;
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// Detects the profile of the file system holding `path` (which must exist) and returns it with
/// the device number it was detected for.
///
/// # Errors
/// I/O errors from `stat`/`statfs`; an unreadable mountinfo or device only weakens FUSE detection
/// to [`Profile::Posix`].
pub fn detect(path: &Path) -> io::Result<(u64, Detected)> {
    let dev = fs::metadata(path)?.dev();
    let detected = match statfs_type(path)? {
        MSDOS_SUPER_MAGIC => Detected::plain(Profile::Fat),
        EXFAT_SUPER_MAGIC => Detected::plain(Profile::ExFat),
        FUSE_SUPER_MAGIC => match mount_of(dev, path) {
            Some((fstype, source)) => from_fstype(&fstype, Path::new(&source)),
            None => Detected::plain(Profile::Posix),
        },
        _ => Detected::plain(Profile::Posix),
    };
    Ok((dev, detected))
}

/// The profile for an fstype as written in `/proc/self/mountinfo`; `fuseblk` is resolved by
/// reading the boot sector of `source`.
pub fn from_fstype(fstype: &str, source: &Path) -> Detected {
    match fstype {
        "vfat" | "msdos" | "fat" => Detected::plain(Profile::Fat),
        "fuse.fusefat" | "fusefat" => Detected {
            profile: Profile::Fat,
            fusefat: true,
        },
        "exfat" | "fuse.exfat" | "fuseblk.exfat" | "fuse.exfat-fuse" => {
            Detected::plain(Profile::ExFat)
        }
        "fuseblk" => boot_sector_profile(source)
            .map(Detected::plain)
            .unwrap_or(Detected::plain(Profile::Posix)),
        _ => Detected::plain(Profile::Posix),
    }
}

/// FAT or exFAT from the first sector of a block device or image, `None` when neither (or
/// unreadable).
pub fn boot_sector_profile(device: &Path) -> Option<Profile> {
    let mut sector = [0u8; 512];
    fs::File::open(device).ok()?.read_exact(&mut sector).ok()?;
    if &sector[3..11] == b"EXFAT   " {
        Some(Profile::ExFat)
    } else if sector[510..512] == [0x55, 0xaa]
        && (&sector[82..87] == b"FAT32" || &sector[54..57] == b"FAT")
    {
        Some(Profile::Fat)
    } else {
        None
    }
}

/// `(fstype, source)` of the mount with device `dev` whose mount point is the longest prefix of
/// `path`, from `/proc/self/mountinfo`.
fn mount_of(dev: u64, path: &Path) -> Option<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let canon = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let want = format!("{}:{}", major(dev), minor(dev));
    let mut best: Option<(usize, String, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.get(2) != Some(&want.as_str()) || fields.len() < sep + 3 {
            continue;
        }
        let mount_point = PathBuf::from(unescape(fields.get(4).copied().unwrap_or("")));
        let len = if canon.starts_with(&mount_point) {
            mount_point.as_os_str().len()
        } else {
            0
        };
        if best.as_ref().is_none_or(|(l, _, _)| len > *l) {
            best = Some((len, fields[sep + 1].to_string(), unescape(fields[sep + 2])));
        }
    }
    best.map(|(_, t, s)| (t, s))
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

/// `f_type` of `statfs(path)`.
#[allow(unsafe_code)]
fn statfs_type(path: &Path) -> io::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut buf = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated string and `buf` is writable memory the size of a
    // `struct statfs`; statfs only writes into it, and we read it only when it returned 0.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so it filled the struct.
    let st = unsafe { buf.assume_init() };
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fstype_table() {
        let none = Path::new("/nonexistent-device");
        for (fstype, want, ascii) in [
            ("vfat", Profile::Fat, false),
            ("msdos", Profile::Fat, false),
            ("fuse.fusefat", Profile::Fat, true),
            ("exfat", Profile::ExFat, false),
            ("fuseblk", Profile::Posix, false),
            ("ext4", Profile::Posix, false),
            ("fuse.sshfs", Profile::Posix, false),
        ] {
            assert_eq!(
                from_fstype(fstype, none),
                Detected {
                    profile: want,
                    fusefat: ascii
                },
                "{fstype}"
            );
        }
    }

    #[test]
    fn boot_sectors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let mut s = vec![0u8; 512];
        s[3..11].copy_from_slice(b"EXFAT   ");
        fs::write(&p, &s).unwrap();
        assert_eq!(boot_sector_profile(&p), Some(Profile::ExFat));
        let mut s = vec![0u8; 512];
        s[82..90].copy_from_slice(b"FAT32   ");
        s[510] = 0x55;
        s[511] = 0xaa;
        fs::write(&p, &s).unwrap();
        assert_eq!(boot_sector_profile(&p), Some(Profile::Fat));
        fs::write(&p, vec![0u8; 512]).unwrap();
        assert_eq!(boot_sector_profile(&p), None);
    }

    #[test]
    fn this_tempdir_is_not_fat() {
        let dir = tempfile::tempdir().unwrap();
        let (_, d) = detect(dir.path()).unwrap();
        assert_eq!(d.profile, Profile::Posix);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape(r"/media/my\040stick"), "/media/my stick");
        assert_eq!(unescape(r"/a\\b"), r"/a\\b");
    }

    #[test]
    fn dev_numbers() {
        let dev = (8u64 << 8) | 1; // sda1, old encoding
        assert_eq!((major(dev), minor(dev)), (8, 1));
    }
}
