//! Configuration: which folders this machine syncs and with which mirrors, as TOML in
//! `$XDG_CONFIG_HOME/briefcase/config.toml`; journals live in `$XDG_DATA_HOME/briefcase/`.
//! Both honour the XDG variables (via the `directories` crate) so a test can run two
//! "machines" side by side in temp dirs.
//!
//! ```toml
//! [[folder]]
//! path = "/home/me/work"
//!
//! [[folder.mirror]]
//! name = "nas"
//! target = "/mnt/nas/work"      # or "dir:/mnt/nas/work"
//! send_only = false
//!
//! [[folder.mirror]]
//! name = "stick"
//! target = "stick:/media/usb"
//! stick_id = "3f9c…"            # the stick this folder was shared with (pinned)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors reading or writing the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No usable home/XDG directories.
    #[error("cannot find the config and data directories: set HOME or XDG_CONFIG_HOME and XDG_DATA_HOME")]
    NoDirs,
    /// The file exists but is not valid.
    #[error("config {path}: {reason}; fix or remove the file")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// I/O.
    #[error("config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A mirror target that cannot be understood.
    #[error("mirror target {target:?}: {reason}")]
    BadTarget {
        /// The target as given.
        target: String,
        /// What is wrong, with the accepted forms.
        reason: String,
    },
}

/// Where this "machine" keeps things.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Config dir (`$XDG_CONFIG_HOME/briefcase`).
    pub config: PathBuf,
    /// Data dir (`$XDG_DATA_HOME/briefcase`): journals.
    pub data: PathBuf,
    /// Runtime dir (`$XDG_RUNTIME_DIR/briefcase`, else under the data dir): control sockets.
    pub runtime: PathBuf,
}

impl Dirs {
    /// The XDG directories of the current user.
    ///
    /// # Errors
    /// [`ConfigError::NoDirs`].
    pub fn from_env() -> Result<Dirs, ConfigError> {
        let p = directories::ProjectDirs::from("", "", "briefcase").ok_or(ConfigError::NoDirs)?;
        let data = p.data_dir().to_path_buf();
        Ok(Dirs {
            config: p.config_dir().to_path_buf(),
            runtime: p
                .runtime_dir()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| data.join("run")),
            data,
        })
    }

    /// The config file.
    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }

    /// This machine's age identity (`briefcase id`), mode 0600.
    pub fn identity_file(&self) -> PathBuf {
        self.config.join("identity.txt")
    }
}

/// The whole config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    /// This machine's replica name (default: host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Synced folders.
    #[serde(default, rename = "folder")]
    pub folders: Vec<FolderConfig>,
}

/// One synced folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderConfig {
    /// Absolute path of the local root.
    pub path: PathBuf,
    /// Its mirrors.
    #[serde(default, rename = "mirror")]
    pub mirrors: Vec<MirrorConfig>,
}

/// One mirror of a folder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MirrorConfig {
    /// Short name used in messages and commands.
    pub name: String,
    /// Target URL (`/path`, `dir:/path`).
    pub target: String,
    /// Push only, never pull.
    #[serde(default)]
    pub send_only: bool,
    /// Sticks only: the ID of the stick this folder was shared with (32 hex digits, derived
    /// from the stick's secret), recorded when the mirror is added or cloned, or at the first
    /// opening for a mirror added by an older version (trust on first use). A stick with
    /// another secret is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stick_id: Option<String>,
}

/// A parsed mirror target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A plain directory.
    Dir(PathBuf),
    /// An encrypted stick mounted at this path (`stick:/media/usb`).
    Stick(PathBuf),
}

impl Target {
    /// Parses `/path`, `dir:/path` or `stick:/path` (relative paths are taken from the current
    /// directory).
    ///
    /// # Errors
    /// [`ConfigError::BadTarget`] for backends not built yet.
    pub fn parse(s: &str) -> Result<Target, ConfigError> {
        let bad = |reason: &str| ConfigError::BadTarget {
            target: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = s.strip_prefix("stick:") {
            if rest.is_empty() {
                return Err(bad("give the stick's mount point: stick:/media/usb"));
            }
            let p = PathBuf::from(rest);
            return Ok(Target::Stick(if p.is_absolute() {
                p
            } else {
                std::env::current_dir()
                    .map(|c| c.join(&p))
                    .map_err(|_| bad("relative path and no current directory"))?
            }));
        }
        let path = if let Some(rest) = s.strip_prefix("dir:") {
            rest
        } else if let Some((scheme, _)) = s
            .split_once("://")
            .or_else(|| s.split_once(':').filter(|(a, _)| !a.contains('/')))
        {
            return Err(bad(&format!(
                "the {scheme:?} backend is not available in this version; use a directory (`/path` or `dir:/path`) or a stick (`stick:/media/usb`)"
            )));
        } else {
            s
        };
        let p = PathBuf::from(path);
        if !p.is_absolute() {
            let abs = std::env::current_dir()
                .map(|c| c.join(&p))
                .map_err(|_| bad("relative path and no current directory"))?;
            return Ok(Target::Dir(abs));
        }
        Ok(Target::Dir(p))
    }

    /// Canonical text form (`dir:/abs/path`, `stick:/abs/path`).
    pub fn to_url(&self) -> String {
        match self {
            Target::Dir(p) => format!("dir:{}", p.display()),
            Target::Stick(p) => format!("stick:{}", p.display()),
        }
    }

    /// A local directory holding the mirror's data tree as plain files, to watch with inotify
    /// for changes made there (none for a stick: its tree is encrypted).
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Target::Dir(p) => Some(p),
            Target::Stick(_) => None,
        }
    }

    /// The local path whose appearance means the mirror may be back (a mount point), if any.
    pub fn mount_path(&self) -> Option<&Path> {
        match self {
            Target::Dir(p) | Target::Stick(p) => Some(p),
        }
    }

    /// Whether the mirror is carried between machines (a stick): the daemon says when it is
    /// safe to unplug.
    pub fn is_removable(&self) -> bool {
        matches!(self, Target::Stick(_))
    }
}

impl Config {
    /// Loads the config (empty when the file does not exist).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`], [`ConfigError::Io`].
    pub fn load(dirs: &Dirs) -> Result<Config, ConfigError> {
        let path = dirs.config_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Io { path, source }),
        }
    }

    /// Saves atomically with mode 0600 (invariant 8).
    ///
    /// # Errors
    /// [`ConfigError::Io`].
    pub fn save(&self, dirs: &Dirs) -> Result<(), ConfigError> {
        let path = dirs.config_file();
        let io = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        briefcase_mirror::fsutil::private_dir(&dirs.config).map_err(io)?;
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let text =
            format!("# briefcase configuration (edited by `briefcase mirror add/remove`)\n{text}");
        briefcase_mirror::fsutil::replace_with(
            &path,
            Some(briefcase_mirror::FileMeta {
                mode: 0o600,
                mtime_ns: crate::journal::now_ns(),
            }),
            |f| std::io::Write::write_all(f, text.as_bytes()),
        )
        .map_err(io)?;
        Ok(())
    }

    /// The folder whose root is `root`.
    pub fn folder(&self, root: &Path) -> Option<&FolderConfig> {
        self.folders.iter().find(|f| f.path == root)
    }

    /// The folder whose root is `root`, created if missing.
    pub fn folder_mut(&mut self, root: &Path) -> &mut FolderConfig {
        if let Some(i) = self.folders.iter().position(|f| f.path == root) {
            &mut self.folders[i]
        } else {
            self.folders.push(FolderConfig {
                path: root.to_path_buf(),
                mirrors: Vec::new(),
            });
            let last = self.folders.len() - 1;
            &mut self.folders[last]
        }
    }

    /// This machine's replica name: config, `BRIEFCASE_NAME`, or the host name.
    pub fn machine_name(&self) -> String {
        if let Ok(n) = std::env::var("BRIEFCASE_NAME") {
            if !n.is_empty() {
                return n;
            }
        }
        if let Some(n) = &self.name {
            return n.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "local".into())
    }
}

/// A default mirror name for a target: the directory above the folder's name when the target
/// ends with it (`/mnt/nas/work` for folder `work` → `nas`), else the last component.
pub fn default_mirror_name(folder_root: &Path, target: &Target, taken: &[String]) -> String {
    let p = match target {
        Target::Dir(p) => p,
        Target::Stick(_) => &PathBuf::from("stick"),
    };
    let last = p
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let own = folder_root
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = if last == own {
        p.parent()
            .and_then(|q| q.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or(last)
    } else {
        last
    };
    let base: String = base
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = if base.is_empty() {
        "mirror".to_string()
    } else {
        base
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_table() {
        assert_eq!(
            Target::parse("/mnt/nas").unwrap(),
            Target::Dir("/mnt/nas".into())
        );
        assert_eq!(
            Target::parse("dir:/mnt/nas").unwrap(),
            Target::Dir("/mnt/nas".into())
        );
        assert!(Target::parse("ssh://me@nas/x")
            .unwrap_err()
            .to_string()
            .contains("not available"));
        assert_eq!(
            Target::parse("stick:/media/usb").unwrap(),
            Target::Stick("/media/usb".into())
        );
        assert_eq!(
            Target::Stick("/media/usb".into()).to_url(),
            "stick:/media/usb"
        );
        assert!(Target::parse("stick:").is_err());
        assert!(Target::Stick("/m".into()).local_path().is_none());
    }

    #[test]
    fn default_names() {
        let root = Path::new("/home/me/work");
        assert_eq!(
            default_mirror_name(root, &Target::Dir("/mnt/nas/work".into()), &[]),
            "nas"
        );
        assert_eq!(
            default_mirror_name(root, &Target::Dir("/media/usb".into()), &[]),
            "usb"
        );
        assert_eq!(
            default_mirror_name(root, &Target::Dir("/media/usb".into()), &["usb".into()]),
            "usb-2"
        );
    }
}
