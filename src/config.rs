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
//! stick_id = "3f9c…"            # the pin: the stick this folder was shared with
//! ```
//!
//! Targets are parsed by the backend their scheme names ([`crate::backends`]); this module
//! only keeps them as text.

use std::path::{Path, PathBuf};

use briefcase_mirror::registry::Target;
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
    /// Target URL (`/path`, `dir:/path`, `stick:/media/usb`), parsed by its backend
    /// ([`crate::backends::parse`]).
    pub target: String,
    /// Push only, never pull.
    #[serde(default)]
    pub send_only: bool,
    /// Backends that pin (the encrypted ones): the ID of the secret the mirror this folder was
    /// shared with holds, recorded when the mirror is added or cloned, or at the first opening
    /// for a mirror added by an older version (trust on first use). A mirror with another
    /// secret is refused. Written `stick_id` in the file, as since the stick was the only
    /// backend that pins (so that older versions keep reading it); `pin` is read too.
    #[serde(
        default,
        rename = "stick_id",
        alias = "pin",
        skip_serializing_if = "Option::is_none"
    )]
    pub pin: Option<String>,
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

/// A default mirror name for a target: for a plain directory, the directory above the folder's
/// name when the target ends with it (`/mnt/nas/work` for folder `work` → `nas`), else the last
/// component; for any other target, what its backend calls a mirror (`stick`).
pub fn default_mirror_name(folder_root: &Path, target: &Target, taken: &[String]) -> String {
    let p = match target.place() {
        Some(place) if place.plain => place.path.clone(),
        _ => PathBuf::from(target.noun()),
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

    /// Today's config files keep loading, and the pin keeps its name in the file.
    #[test]
    fn config_files_table() {
        let text = r#"
name = "office"

[[folder]]
path = "/home/me/work"

[[folder.mirror]]
name = "nas"
target = "/mnt/nas/work"
send_only = true

[[folder.mirror]]
name = "usb"
target = "stick:/media/usb"
stick_id = "00112233445566778899aabbccddeeff"
"#;
        let cfg: Config = toml::from_str(text).unwrap();
        let m = &cfg.folders[0].mirrors;
        assert_eq!((m[0].pin.as_deref(), m[0].send_only), (None, true));
        assert_eq!(
            m[1].pin.as_deref(),
            Some("00112233445566778899aabbccddeeff")
        );
        let again = toml::to_string_pretty(&cfg).unwrap();
        assert!(again.contains("stick_id = \"0011"), "{again}");
        assert!(!again.contains("pin"), "{again}");
        let read_back: Config = toml::from_str(&again).unwrap();
        assert_eq!(read_back.folders[0].mirrors, *m);
        let new_name: Config = toml::from_str(&text.replace("stick_id =", "pin =")).unwrap();
        assert_eq!(new_name.folders[0].mirrors, *m);
    }

    #[test]
    fn default_names() {
        let root = Path::new("/home/me/work");
        let t = |s: &str| crate::backends::parse(s).unwrap();
        // (target, names taken, default name)
        let cases: &[(&str, &[&str], &str)] = &[
            ("/mnt/nas/work", &[], "nas"),
            ("/media/usb", &[], "usb"),
            ("dir:/media/usb", &["usb"], "usb-2"),
            ("stick:/media/usb", &[], "stick"),
            ("stick:/media/usb", &["stick"], "stick-2"),
        ];
        for (target, taken, want) in cases {
            let taken: Vec<String> = taken.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                default_mirror_name(root, &t(target), &taken),
                *want,
                "{target}"
            );
        }
    }
}
