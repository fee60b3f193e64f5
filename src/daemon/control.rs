//! The control socket: `$XDG_RUNTIME_DIR/briefcase/control.sock` (mode 0600, in a 0700
//! directory), through which `briefcase status`, `sync` and `conflicts` talk to a running daemon.
//!
//! The protocol is line-delimited JSON (docs/architecture.md, "The daemon"): the client writes one
//! [`Request`] as a JSON object on one line, the daemon answers with one [`Response`] on one line;
//! a connection may carry several requests in turn. Lines are at most [`MAX_LINE`] bytes. Unknown
//! requests and malformed lines get an `error` reply with kind `bad_request`; the connection
//! stays usable.
//!
//! Only one daemon runs per runtime directory: it holds an exclusive `flock` on
//! `daemon.lock` beside the socket for its whole life, refuses to start while another daemon
//! holds it or answers on the socket, and removes a stale socket left by one that died.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read as _, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::outcome::{ConflictRow, MirrorOutcome};
use super::view::FolderView;
use super::{DaemonError, Shutdown};

/// File name of the socket in the runtime directory.
pub const SOCKET_NAME: &str = "control.sock";
/// File name of the lock held by the running daemon.
pub const LOCK_NAME: &str = "daemon.lock";
/// Version of the protocol, sent in [`Response::Pong`]; raised on incompatible changes.
pub const PROTOCOL: u32 = 1;
/// Longest request or response line, in bytes.
pub const MAX_LINE: usize = 16 << 20;
/// How long a client waits for a quick answer (ping, status, conflicts) before giving up.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(30);

/// The socket's path in the runtime directory `runtime` ([`crate::config::Dirs::runtime`]).
pub fn socket_path(runtime: &Path) -> PathBuf {
    runtime.join(SOCKET_NAME)
}

/// A request to the daemon (`{"op": "status", …}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is a daemon there? Answered with [`Response::Pong`].
    Ping,
    /// The live view of one folder (its root) or of all; answered with [`Response::Status`].
    Status {
        /// The folder root (absolute, symlinks resolved); all folders when absent.
        #[serde(default)]
        folder: Option<PathBuf>,
    },
    /// Rescan the folder and sync it now with its mirrors (or one), as `briefcase sync` does;
    /// answered with [`Response::Synced`] once done.
    Sync {
        /// The folder root.
        folder: PathBuf,
        /// Only this mirror.
        #[serde(default)]
        mirror: Option<String>,
        /// Plan only.
        #[serde(default)]
        dry_run: bool,
        /// Allow deleting more than half of a replica's files.
        #[serde(default)]
        allow_mass_delete: bool,
    },
    /// Rescan the folder and list its conflict copies; answered with [`Response::Conflicts`].
    Conflicts {
        /// The folder root.
        folder: PathBuf,
    },
}

/// One mirror's result in [`Response::Synced`]: `{"mirror": "nas", "synced": {report}}`,
/// `{"mirror": "nas", "offline": "why"}` or `{"mirror": "nas", "error": "what"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorReply {
    /// The mirror's name.
    pub mirror: String,
    /// How its sync ended.
    #[serde(flatten)]
    pub outcome: MirrorOutcome,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The daemon does not run this folder (not in its config yet): do it without the daemon.
    UnknownFolder,
    /// The folder has no mirror of that name.
    UnknownMirror,
    /// The line is not a request this daemon understands.
    BadRequest,
    /// The request was understood but failed (the message says why and what to do).
    Failed,
    /// The daemon is stopping.
    ShuttingDown,
}

/// The daemon's answer (`{"reply": "status", …}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong {
        /// The daemon's process ID.
        pid: u32,
        /// Its version (`briefcase --version`).
        version: String,
        /// [`PROTOCOL`].
        protocol: u32,
    },
    /// Answer to [`Request::Status`].
    Status {
        /// The daemon's process ID.
        pid: u32,
        /// The folders asked for.
        folders: Vec<FolderView>,
    },
    /// Answer to [`Request::Sync`].
    Synced {
        /// The folder root.
        folder: PathBuf,
        /// One entry per mirror synced, in config order.
        outcomes: Vec<MirrorReply>,
    },
    /// Answer to [`Request::Conflicts`].
    Conflicts {
        /// The folder root.
        folder: PathBuf,
        /// The conflict copies waiting.
        conflicts: Vec<ConflictRow>,
    },
    /// The request failed.
    Error {
        /// Why, for programs.
        kind: ErrorKind,
        /// Why, for people: names the folder/mirror and says what to do.
        message: String,
    },
}

impl Response {
    /// An error reply.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error {
            kind,
            message: message.into(),
        }
    }
}

/// Errors of a control-socket client.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Connecting, writing or reading failed.
    #[error("control socket {socket}: {source}; is the daemon stuck? `systemctl --user status briefcase` shows it")]
    Io {
        /// The socket.
        socket: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The answer is not a response of this protocol.
    #[error("control socket {socket}: unexpected answer ({reason}); is the daemon the same version as this command? Restart it with `systemctl --user restart briefcase`")]
    Protocol {
        /// The socket.
        socket: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// A blocking client of the control socket (the CLI's side).
#[derive(Debug)]
pub struct Client {
    socket: PathBuf,
    reader: BufReader<std::os::unix::net::UnixStream>,
}

impl Client {
    /// Connects to the daemon serving `runtime` (the runtime directory). `Ok(None)` when no
    /// daemon answers there (no socket, or a stale one).
    ///
    /// # Errors
    /// [`ControlError::Io`] for other failures (e.g. permission denied).
    pub fn connect(runtime: &Path) -> Result<Option<Client>, ControlError> {
        let socket = socket_path(runtime);
        match std::os::unix::net::UnixStream::connect(&socket) {
            Ok(s) => Ok(Some(Client {
                socket,
                reader: BufReader::new(s),
            })),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(source) => Err(ControlError::Io { socket, source }),
        }
    }

    /// Sends `req` and waits for the answer, at most `timeout` (`None`: as long as it takes, for
    /// a sync).
    ///
    /// # Errors
    /// [`ControlError`].
    pub fn call(
        &mut self,
        req: &Request,
        timeout: Option<Duration>,
    ) -> Result<Response, ControlError> {
        let io = |source| ControlError::Io {
            socket: self.socket.clone(),
            source,
        };
        let mut line = serde_json::to_vec(req).map_err(|e| ControlError::Protocol {
            socket: self.socket.clone(),
            reason: e.to_string(),
        })?;
        line.push(b'\n');
        let s = self.reader.get_mut();
        s.set_read_timeout(timeout).map_err(io)?;
        s.set_write_timeout(Some(QUICK_TIMEOUT)).map_err(io)?;
        s.write_all(&line).map_err(io)?;
        let mut answer = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut answer)
            .map_err(io)?;
        if answer.is_empty() {
            return Err(ControlError::Protocol {
                socket: self.socket.clone(),
                reason: "the daemon closed the connection".into(),
            });
        }
        serde_json::from_slice(&answer).map_err(|e| ControlError::Protocol {
            socket: self.socket.clone(),
            reason: e.to_string(),
        })
    }
}

/// The daemon's side: the bound socket and the lock that makes it the only daemon here. Dropping
/// it removes the socket (when it is still the one bound here) and releases the lock.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    listener: UnixListener,
    inode: u64,
    _lock: File,
}

impl ControlSocket {
    /// Creates the runtime directory (0700), takes the daemon lock, removes a stale socket and
    /// binds a new one (0600). Call from within a tokio runtime.
    ///
    /// # Errors
    /// [`DaemonError::AlreadyRunning`] when another daemon holds the lock or answers on the
    /// socket; [`DaemonError::Socket`] for I/O failures and a path that is not a socket.
    pub fn bind(runtime: &Path) -> Result<ControlSocket, DaemonError> {
        let path = socket_path(runtime);
        let err = |p: &Path, what: &str, source: std::io::Error| DaemonError::Socket {
            path: p.to_path_buf(),
            what: what.to_string(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runtime)
            .map_err(|e| err(runtime, "create the runtime directory", e))?;
        let meta =
            fs::metadata(runtime).map_err(|e| err(runtime, "look at the runtime directory", e))?;
        if meta.mode() & 0o077 != 0 {
            fs::set_permissions(runtime, fs::Permissions::from_mode(0o700))
                .map_err(|e| err(runtime, "make the runtime directory private (0700)", e))?;
        }
        let lock_path = runtime.join(LOCK_NAME);
        let mut lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| err(&lock_path, "open the daemon lock", e))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(DaemonError::AlreadyRunning {
                    socket: path.clone(),
                    pid: ping_pid(runtime),
                })
            }
            Err(e) => return Err(err(&lock_path, "lock", e.into())),
        }
        let _ = lock.set_len(0);
        let _ = writeln!(lock, "{}", std::process::id());
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {
                if let Some(pid) = ping_pid(runtime) {
                    return Err(DaemonError::AlreadyRunning {
                        socket: path,
                        pid: Some(pid),
                    });
                }
                tracing::info!(socket = %path.display(), "removing the stale control socket of a daemon that is gone");
                fs::remove_file(&path)
                    .map_err(|e| err(&path, "remove the stale control socket", e))?;
            }
            Ok(_) => {
                return Err(err(
                    &path,
                    "use as the control socket",
                    std::io::Error::other("it exists and is not a socket; move it away"),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&path, "look at the control socket", e)),
        }
        let listener = UnixListener::bind(&path).map_err(|e| err(&path, "bind", e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
            .map_err(|e| err(&path, "make the control socket private (0600)", e))?;
        let inode = fs::symlink_metadata(&path)
            .map_err(|e| err(&path, "look at the control socket", e))?
            .ino();
        Ok(ControlSocket {
            path,
            listener,
            inode,
            _lock: lock,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until `shutdown`: each one on its own task, each request answered by
    /// `handler`. A request in flight when shutdown comes is answered with
    /// [`ErrorKind::ShuttingDown`].
    pub async fn serve<H, F>(&self, handler: H, mut shutdown: Shutdown)
    where
        H: Fn(Request) -> F + Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Response> + Send + 'static,
    {
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = shutdown.recv() => return,
            };
            match accepted {
                Ok((stream, _)) => {
                    let handler = handler.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(connection(stream, handler, shutdown));
                }
                Err(e) => {
                    tracing::warn!(socket = %self.path.display(), error = %e, "accepting a control connection failed");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The PID of a daemon answering on the socket in `runtime`, if one does.
fn ping_pid(runtime: &Path) -> Option<u32> {
    let mut c = Client::connect(runtime).ok()??;
    match c.call(&Request::Ping, Some(Duration::from_secs(5))).ok()? {
        Response::Pong { pid, .. } => Some(pid),
        _ => None,
    }
}

/// Most JSON values (objects, arrays, keys, scalars) a request line may hold; a request has a
/// dozen at most. serde decodes an internally tagged enum such as [`Request`] by first buffering
/// every value of the object (the tag may come last), about 32 bytes per value: without this
/// bound a 16 MiB line `{"x":[0,0,…],"op":"ping"}` made the daemon allocate 512 MiB.
pub const MAX_REQUEST_VALUES: usize = 1024;

/// Decodes one request line as the daemon receives it (with or without its `\n`): the request,
/// or the `bad_request` reply that says why not. Lines come from any process of this user and
/// may be anything up to [`MAX_LINE`] bytes; the fuzz target `tests/fuzz_control.rs` feeds it.
///
/// # Errors
/// [`Response::Error`] with [`ErrorKind::BadRequest`] for a line that is not a request of this
/// protocol.
pub fn parse_request(line: &[u8]) -> Result<Request, Response> {
    let refuse = |why: String| {
        Response::error(
            ErrorKind::BadRequest,
            format!("not a request of protocol {PROTOCOL}: {why}"),
        )
    };
    if line.len() > MAX_LINE {
        return Err(Response::error(
            ErrorKind::BadRequest,
            format!("request longer than {MAX_LINE} bytes"),
        ));
    }
    // First count the values without keeping them, then decode.
    let count = std::cell::Cell::new(0);
    let mut de = serde_json::Deserializer::from_slice(line);
    serde::de::DeserializeSeed::deserialize(CountValues(&count), &mut de)
        .and_then(|()| de.end())
        .map_err(|e| refuse(e.to_string()))?;
    serde_json::from_slice::<Request>(line).map_err(|e| refuse(e.to_string()))
}

/// Walks one JSON value, counting it and everything inside; fails past [`MAX_REQUEST_VALUES`].
struct CountValues<'a>(&'a std::cell::Cell<usize>);

impl CountValues<'_> {
    fn tick<E: serde::de::Error>(&self) -> Result<(), E> {
        self.0.set(self.0.get() + 1);
        if self.0.get() > MAX_REQUEST_VALUES {
            return Err(E::custom(format!(
                "more than {MAX_REQUEST_VALUES} JSON values"
            )));
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for CountValues<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CountValues<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.tick()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.tick()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.tick()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.tick()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.tick()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.tick()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.tick()?;
        while seq.next_element_seed(CountValues(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.tick()?;
        while map.next_key_seed(CountValues(self.0))?.is_some() {
            map.next_value_seed(CountValues(self.0))?;
        }
        Ok(())
    }
}

async fn connection<H, F>(stream: UnixStream, handler: H, mut shutdown: Shutdown)
where
    H: Fn(Request) -> F,
    F: std::future::Future<Output = Response>,
{
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut r).take(MAX_LINE as u64 + 1);
        let read = tokio::select! {
            n = limited.read_until(b'\n', &mut line) => n,
            _ = shutdown.recv() => return,
        };
        match read {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "control connection closed");
                return;
            }
        }
        let too_long = line.len() > MAX_LINE;
        let response = if too_long {
            Response::error(
                ErrorKind::BadRequest,
                format!("request longer than {MAX_LINE} bytes"),
            )
        } else {
            match parse_request(&line) {
                Ok(req) => {
                    tracing::debug!(?req, "control request");
                    tokio::select! {
                        r = handler(req) => r,
                        _ = shutdown.recv() => Response::error(ErrorKind::ShuttingDown, "the daemon is stopping; try again once it runs"),
                    }
                }
                Err(refused) => refused,
            }
        };
        let mut out = match serde_json::to_vec(&response) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a control response");
                return;
            }
        };
        out.push(b'\n');
        if w.write_all(&out).await.is_err() || too_long || shutdown.is_shutdown() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Requests as they look on the wire, one line each.
    #[test]
    fn request_wire_format() {
        let cases: &[(&str, Request)] = &[
            (r#"{"op":"ping"}"#, Request::Ping),
            (r#"{"op":"status"}"#, Request::Status { folder: None }),
            (
                r#"{"op":"status","folder":"/w"}"#,
                Request::Status {
                    folder: Some("/w".into()),
                },
            ),
            (
                r#"{"op":"sync","folder":"/w"}"#,
                Request::Sync {
                    folder: "/w".into(),
                    mirror: None,
                    dry_run: false,
                    allow_mass_delete: false,
                },
            ),
            (
                r#"{"op":"sync","folder":"/w","mirror":"nas","dry_run":true}"#,
                Request::Sync {
                    folder: "/w".into(),
                    mirror: Some("nas".into()),
                    dry_run: true,
                    allow_mass_delete: false,
                },
            ),
            (
                r#"{"op":"conflicts","folder":"/w"}"#,
                Request::Conflicts {
                    folder: "/w".into(),
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                &serde_json::from_str::<Request>(line).unwrap(),
                want,
                "{line}"
            );
        }
        assert!(serde_json::from_str::<Request>(r#"{"op":"reboot"}"#).is_err());
    }

    #[test]
    fn reply_wire_format() {
        let r = MirrorReply {
            mirror: "nas".into(),
            outcome: MirrorOutcome::Offline("gone".into()),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"mirror":"nas","offline":"gone"}"#
        );
        let e = Response::error(ErrorKind::UnknownFolder, "x");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"reply":"error","kind":"unknown_folder","message":"x"}"#
        );
        let back: MirrorReply = serde_json::from_str(r#"{"mirror":"nas","error":"boom"}"#).unwrap();
        assert!(matches!(back.outcome, MirrorOutcome::Failed(s) if s == "boom"));
    }

    #[tokio::test]
    async fn one_daemon_per_runtime_dir_and_private_socket() {
        let t = tempfile::tempdir().unwrap();
        let run = t.path().join("run/briefcase");
        let sock = ControlSocket::bind(&run).unwrap();
        let mode = fs::metadata(sock.path()).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::metadata(&run).unwrap().mode() & 0o777, 0o700);
        let (tx, rx) = tokio::sync::broadcast::channel(1);
        let server = tokio::spawn(async move {
            sock.serve(
                |req| async move {
                    match req {
                        Request::Ping => Response::Pong {
                            pid: 42,
                            version: "t".into(),
                            protocol: PROTOCOL,
                        },
                        _ => Response::error(ErrorKind::Failed, "no"),
                    }
                },
                Shutdown::new(rx),
            )
            .await;
            sock
        });
        // A second daemon is refused and told who runs.
        let run2 = run.clone();
        let second = tokio::task::spawn_blocking(move || ControlSocket::bind(&run2))
            .await
            .unwrap();
        match second {
            Err(DaemonError::AlreadyRunning { pid, .. }) => assert_eq!(pid, Some(42)),
            other => panic!("expected AlreadyRunning, got {other:?}"),
        }
        // Garbage gets an error, and the connection stays usable.
        let run3 = run.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(socket_path(&run3)).unwrap();
            s.write_all(b"nonsense\n{\"op\":\"ping\"}\n").unwrap();
            let mut r = BufReader::new(s);
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            assert!(l.contains("bad_request"), "{l}");
            l.clear();
            r.read_line(&mut l).unwrap();
            assert!(l.contains("pong"), "{l}");
        })
        .await
        .unwrap();
        tx.send(()).unwrap();
        let sock = server.await.unwrap();
        drop(sock);
        assert!(!socket_path(&run).exists(), "socket removed at exit");
        // A stale socket (no daemon behind it) is replaced.
        let stale = std::os::unix::net::UnixListener::bind(socket_path(&run)).unwrap();
        drop(stale);
        // A child process forked meanwhile by another test may hold the lock's descriptor for
        // a moment (until its exec closes it): retry briefly.
        let mut again = ControlSocket::bind(&run);
        for _ in 0..50 {
            if again.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            again = ControlSocket::bind(&run);
        }
        assert!(again.unwrap().path().exists());
    }
}
