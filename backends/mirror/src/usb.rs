//! Fake USB sticks for tests: a file-system image (FAT32, exFAT or ext4) that is plugged
//! (mounted), cleanly unplugged, or **yanked**: in-flight I/O made to fail (the FUSE connection
//! aborted for the FUSE drivers, the ext4 shutdown ioctl for ext4) and the mount then detached
//! with `umount -l`. A bare `umount -l` is not a yank: writers holding files open carry on.
//!
//! The kernel of the test machines has no vfat/exfat driver, so FAT32 is mounted with `fusefat`
//! and exFAT with `exfat-fuse` on a loop device, like the shell recipes in
//! `backends/dir/tests/support/usb.sh`. Needs root; [`UsbImage::missing_prerequisite`] says
//! what is missing so a test can print it and pass without running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The file system of an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsbFs {
    /// FAT32 (`mkfs.vfat -F 32`), mounted with `fusefat`.
    Vfat,
    /// exFAT (`mkfs.exfat`), mounted with `mount.exfat-fuse` on a loop device.
    Exfat,
    /// ext4, mounted by the kernel on a loop device.
    Ext4,
}

/// An image file and its mount point, in a temp dir; unplugged when dropped.
pub struct UsbImage {
    /// The image file.
    pub img: PathBuf,
    /// Where it is mounted.
    pub mnt: PathBuf,
    /// Its file system.
    pub fs: UsbFs,
    loopdev: Mutex<Option<String>>,
    _dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for UsbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UsbImage({:?} at {})", self.fs, self.mnt.display())
    }
}

fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether `mnt` is a mount point now (in /proc/self/mountinfo).
pub fn is_mounted(mnt: &Path) -> bool {
    let needle = format!(" {} ", mnt.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().any(|l| l.contains(&needle)))
        .unwrap_or(false)
}

impl UsbImage {
    /// What is missing to use `fs` images here (not root, a tool, /dev/fuse), or `None`.
    pub fn missing_prerequisite(fs: UsbFs) -> Option<String> {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
            })
            .unwrap_or_default();
        if uid != "0" {
            return Some("not running as root (mounting images needs root)".into());
        }
        let tools: &[&str] = match fs {
            UsbFs::Vfat => &["mkfs.vfat", "fusefat", "fusermount"],
            UsbFs::Exfat => &["mkfs.exfat", "mount.exfat-fuse", "losetup", "fusermount"],
            UsbFs::Ext4 => &["mkfs.ext4", "losetup", "mount"],
        };
        for t in tools {
            if !have(t) {
                return Some(format!(
                    "`{t}` is not installed (apt-get install dosfstools fusefat exfat-fuse exfatprogs fuse3 e2fsprogs)"
                ));
            }
        }
        if fs != UsbFs::Ext4 && !Path::new("/dev/fuse").exists() {
            return Some("/dev/fuse is missing".into());
        }
        None
    }

    /// A new, formatted image of `size_mib` MiB (not plugged yet).
    ///
    /// # Errors
    /// What failed, with the command.
    pub fn make(size_mib: u64, fs: UsbFs) -> Result<UsbImage, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let img = dir.path().join("stick.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
        f.set_len(size_mib << 20).map_err(|e| e.to_string())?;
        drop(f);
        match fs {
            UsbFs::Vfat => run(Command::new("mkfs.vfat")
                .args(["-F", "32", "-n", "BRIEFCASE"])
                .arg(&img))?,
            UsbFs::Exfat => run(Command::new("mkfs.exfat")
                .args(["-L", "BRIEFCASE"])
                .arg(&img))?,
            UsbFs::Ext4 => run(Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "BRIEFCASE"])
                .arg(&img))?,
        };
        Ok(UsbImage {
            img,
            mnt,
            fs,
            loopdev: Mutex::new(None),
            _dir: Some(dir),
        })
    }

    /// The same image, to be plugged at another mount point `mnt` (another machine's view of
    /// the stick; plug only one at a time). The image stays owned by `self`.
    pub fn elsewhere(&self, mnt: PathBuf) -> UsbImage {
        UsbImage {
            img: self.img.clone(),
            mnt,
            fs: self.fs,
            loopdev: Mutex::new(None),
            _dir: None,
        }
    }

    /// Mounts the image at [`UsbImage::mnt`] and waits until it is mounted.
    ///
    /// # Errors
    /// What failed.
    pub fn plug(&self) -> Result<(), String> {
        if !self.mnt.exists() {
            std::fs::create_dir_all(&self.mnt).map_err(|e| e.to_string())?;
        }
        match self.fs {
            UsbFs::Vfat => {
                run(Command::new("fusefat")
                    .args(["-o", "rw+"])
                    .arg(&self.img)
                    .arg(&self.mnt))?;
            }
            UsbFs::Exfat | UsbFs::Ext4 => {
                let dev = run(Command::new("losetup")
                    .args(["-f", "--show"])
                    .arg(&self.img))?;
                let r = if self.fs == UsbFs::Exfat {
                    run(Command::new("mount.exfat-fuse").arg(&dev).arg(&self.mnt))
                } else {
                    run(Command::new("mount").arg(&dev).arg(&self.mnt))
                };
                if let Err(e) = r {
                    let _ = run(Command::new("losetup").arg("-d").arg(&dev));
                    return Err(e);
                }
                if let Ok(mut g) = self.loopdev.lock() {
                    *g = Some(dev);
                }
            }
        }
        for _ in 0..250 {
            if is_mounted(&self.mnt) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(format!("{} did not mount within 5 s", self.img.display()))
    }

    /// A clean eject: flush, unmount, free the loop device.
    ///
    /// # Errors
    /// What failed.
    pub fn unplug(&self) -> Result<(), String> {
        let _ = run(Command::new("sync").arg("-f").arg(&self.mnt));
        let r = match self.fs {
            UsbFs::Vfat | UsbFs::Exfat => run(Command::new("fusermount").arg("-u").arg(&self.mnt)),
            UsbFs::Ext4 => run(Command::new("umount").arg(&self.mnt)),
        };
        self.free_loop();
        self.wait_unmounted();
        r.map(|_| ())
    }

    /// Pulls the stick out: I/O in flight fails from now on, then the mount disappears.
    ///
    /// # Errors
    /// What failed.
    pub fn yank(&self) -> Result<(), String> {
        match self.fs {
            UsbFs::Vfat | UsbFs::Exfat => {
                use std::os::unix::fs::MetadataExt;
                let dev = std::fs::metadata(&self.mnt)
                    .map_err(|e| e.to_string())?
                    .dev();
                // The connection directory is named by the kernel's dev_t (major << 20 | minor).
                let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
                let conns = Path::new("/sys/fs/fuse/connections");
                if !conns.join(format!("{}", (major << 20) | minor)).exists() {
                    let _ = run(Command::new("mount")
                        .args(["-t", "fusectl", "none"])
                        .arg(conns));
                }
                std::fs::write(conns.join(format!("{}/abort", (major << 20) | minor)), b"1")
                    .map_err(|e| format!("abort the FUSE connection: {e}"))?;
            }
            UsbFs::Ext4 => {
                // EXT4_IOC_SHUTDOWN with EXT4_GOING_FLAGS_NOLOGFLUSH, through python3 (keeps
                // unsafe ioctl code out of the test kit).
                run(Command::new("python3").args([
                    "-c",
                    "import fcntl,os,struct,sys; fd=os.open(sys.argv[1],os.O_RDONLY); fcntl.ioctl(fd,0x8004587d,struct.pack('I',2))",
                ]).arg(&self.mnt))?;
            }
        }
        let r = run(Command::new("umount").arg("-l").arg(&self.mnt));
        self.free_loop();
        self.wait_unmounted();
        r.map(|_| ())
    }

    fn free_loop(&self) {
        if let Ok(mut g) = self.loopdev.lock() {
            if let Some(dev) = g.take() {
                let _ = run(Command::new("losetup").arg("-d").arg(&dev));
            }
        }
    }

    fn wait_unmounted(&self) {
        for _ in 0..250 {
            if !is_mounted(&self.mnt) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Whether the image is mounted now.
    pub fn is_plugged(&self) -> bool {
        is_mounted(&self.mnt)
    }

    /// The image's raw bytes (to check that nothing plain was written).
    ///
    /// # Errors
    /// I/O errors.
    pub fn raw(&self) -> std::io::Result<Vec<u8>> {
        std::fs::read(&self.img)
    }
}

impl Drop for UsbImage {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = self.unplug();
            if is_mounted(&self.mnt) {
                let _ = run(Command::new("umount").arg("-l").arg(&self.mnt));
            }
        }
        self.free_loop();
    }
}
