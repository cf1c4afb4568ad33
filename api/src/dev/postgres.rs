//! A private PostgreSQL cluster run from the installed server binaries: `rowguard dev`'s
//! embedded database, and the test harness's throwaway one.
//!
//! `initdb` refuses to run as root, so when we are root the server binaries run as the
//! `postgres` user (the data directory is handed to that user first).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Why the cluster could not be prepared or started. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "no PostgreSQL server binaries found (looked at `pg_config --bindir` and \
         /usr/lib/postgresql/*/bin). Install them (Debian/Ubuntu: `apt-get install postgresql`), \
         or set DATABASE_URL to an existing server"
    )]
    NoServerBinaries,
    #[error("running as root, but there is no `postgres` user to run the server as: {0}")]
    NoPostgresUser(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("could not prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no free loopback port: {0}")]
    NoPort(std::io::Error),
    #[error(
        "{0}: the path holds {1:?}, which `pg_ctl` would hand to a shell; choose a directory \
         whose path has only letters, digits and / . _ - + @ (ROWGUARD_DEV_DATA_DIR)"
    )]
    UnsafePath(PathBuf, char),
}

/// True for a character that means the same to a shell, to `pg_ctl -o` and to PostgreSQL's
/// directory lists whether or not it is quoted.
fn is_plain_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '@')
}

/// Refuses a path that would not survive `pg_ctl`'s shell unchanged (it passes `-o` options
/// through `/bin/sh`): `$(...)` in a directory name would run as the server's user, and a space
/// or comma would split the socket directory setting.
pub fn check_plain_path(path: &Path) -> Result<(), ClusterError> {
    match path
        .to_string_lossy()
        .chars()
        .find(|c| !is_plain_path_char(*c))
    {
        Some(c) => Err(ClusterError::UnsafePath(path.to_path_buf(), c)),
        None => Ok(()),
    }
}

/// A cluster in `data_dir`, possibly not initialised or not running yet.
#[derive(Debug, Clone)]
pub struct LocalCluster {
    bindir: PathBuf,
    data_dir: PathBuf,
    run_as_postgres: bool,
}

impl LocalCluster {
    /// Finds the server binaries; nothing is created yet.
    pub fn new(data_dir: impl Into<PathBuf>) -> Result<Self, ClusterError> {
        let data_dir = data_dir.into();
        // The server changes into its data directory, so relative paths (the socket directory)
        // would resolve against the wrong place.
        let data_dir = std::path::absolute(&data_dir).map_err(|source| ClusterError::Io {
            path: data_dir.clone(),
            source,
        })?;
        check_plain_path(&data_dir)?;
        Ok(Self {
            bindir: server_bindir().ok_or(ClusterError::NoServerBinaries)?,
            data_dir,
            run_as_postgres: is_root(),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// True once `initdb` has run in the data directory.
    pub fn is_initialised(&self) -> bool {
        self.data_dir.join("PG_VERSION").exists()
    }

    /// Runs `initdb` (superuser `postgres`, trust authentication: the server listens on
    /// loopback only and is for development and tests).
    pub fn init(&self) -> Result<(), ClusterError> {
        std::fs::create_dir_all(&self.data_dir).map_err(|source| ClusterError::Io {
            path: self.data_dir.clone(),
            source,
        })?;
        if self.run_as_postgres {
            // chown follows a symbolic link: one planted here would hand its target (say /etc)
            // to the `postgres` user.
            let planted = std::fs::symlink_metadata(&self.data_dir)
                .map_err(|source| ClusterError::Io {
                    path: self.data_dir.clone(),
                    source,
                })?
                .file_type()
                .is_symlink();
            if planted {
                return Err(ClusterError::Command {
                    what: "preparing the data directory".into(),
                    detail: format!(
                        "{} is a symbolic link; refusing to hand its target to the `postgres` user",
                        self.data_dir.display()
                    ),
                });
            }
            let (uid, gid) = postgres_ids()?;
            // lchown: should a link appear here after the check, it is the link that changes
            // hands, not what it points to.
            std::os::unix::fs::lchown(&self.data_dir, Some(uid), Some(gid)).map_err(|source| {
                ClusterError::Io {
                    path: self.data_dir.clone(),
                    source,
                }
            })?;
            if !reachable_by(&self.data_dir, uid, gid) {
                return Err(ClusterError::Command {
                    what: "preparing the data directory".into(),
                    detail: format!(
                        "the `postgres` user cannot reach {} (a parent directory is private, e.g. /root); \
                         set ROWGUARD_DEV_DATA_DIR to a directory it can reach, such as /tmp/rowguard-dev",
                        self.data_dir.display()
                    ),
                });
            }
        }
        let mut initdb = self.server_command("initdb");
        initdb.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(initdb, "initdb")
    }

    /// Starts the server on `port` (loopback only) and waits until it accepts connections.
    /// `extra` are further `-c name=value` server settings.
    pub fn start(&self, port: u16, extra: &[&str]) -> Result<(), ClusterError> {
        self.start_listening(port, "127.0.0.1", extra)
    }

    /// Starts the server with no TCP port at all: it is reached only through its Unix socket,
    /// which lives in the data directory (mode 0700), so only the account that runs the server
    /// (and root) can connect. Trust authentication over loopback TCP would give every local
    /// account a superuser, and with it the server account's files. Connect with
    /// [`Self::socket_url`].
    pub fn start_private(&self, port: u16) -> Result<(), ClusterError> {
        self.start_listening(port, "''", &[])
    }

    /// A connection URL for `user` to `database` through the server's Unix socket.
    pub fn socket_url(&self, user: &str, port: u16, database: &str) -> String {
        let host: String = openidconnect::url::form_urlencoded::byte_serialize(
            self.data_dir.as_os_str().as_encoded_bytes(),
        )
        .collect();
        format!("postgres://{user}@localhost:{port}/{database}?host={host}")
    }

    fn start_listening(
        &self,
        port: u16,
        addresses: &str,
        extra: &[&str],
    ) -> Result<(), ClusterError> {
        let mut options = format!(
            "-p {port} -c listen_addresses={addresses} -c unix_socket_directories={dir}",
            dir = self.data_dir.display()
        );
        for setting in extra {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let mut start = self.server_command("pg_ctl");
        start
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(self.data_dir.join("server.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"]);
        run(start, "pg_ctl start")
    }

    /// True when a server is running on this data directory.
    pub fn is_running(&self) -> bool {
        let mut status = self.server_command("pg_ctl");
        status.arg("-D").arg(&self.data_dir).arg("status");
        status.output().is_ok_and(|o| o.status.success())
    }

    /// Stops the server, letting sessions finish cleanly (`fast` mode).
    pub fn stop(&self) -> Result<(), ClusterError> {
        let mut stop = self.server_command("pg_ctl");
        stop.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "stop"]);
        run(stop, "pg_ctl stop")
    }

    /// A shell command that stops the server at once and deletes its files (for a throwaway
    /// cluster's exit watcher).
    pub fn destroy_command(&self) -> String {
        format!(
            "{run_as}{pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {data}",
            run_as = if self.run_as_postgres {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_ctl = self.bindir.join("pg_ctl").display(),
            data = self.data_dir.display()
        )
    }

    fn server_command(&self, program: &str) -> Command {
        if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bindir.join(program));
            c
        } else {
            Command::new(self.bindir.join(program))
        }
    }
}

/// Where `initdb`, `pg_ctl` and `postgres` live: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn server_bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|dir| dir.join("initdb").exists());
    if from_pg_config.is_some() {
        return from_pg_config;
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    candidates.pop().map(|(_, bin)| bin)
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, ClusterError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(ClusterError::NoPort)
}

fn run(mut command: Command, what: &str) -> Result<(), ClusterError> {
    let output: Output = command.output().map_err(|e| ClusterError::Command {
        what: what.to_owned(),
        detail: e.to_string(),
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ClusterError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// True when this process runs as root (PostgreSQL and PgBouncer then run as `postgres`).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The `postgres` user's uid and gid.
pub fn postgres_ids() -> Result<(u32, u32), ClusterError> {
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok((user.uid.as_raw(), user.gid.as_raw())),
        Ok(None) => Err(ClusterError::NoPostgresUser("no such user".into())),
        Err(e) => Err(ClusterError::NoPostgresUser(e.to_string())),
    }
}

/// Whether a process running as `uid`/`gid` can reach `path`: every directory above it must let
/// that user search it (the path itself need not exist yet).
pub fn reachable_by(path: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(path) = std::path::absolute(path) else {
        return false;
    };
    path.ancestors()
        .skip(1)
        .all(|dir| match std::fs::metadata(dir) {
            Ok(meta) => {
                let mode = meta.mode();
                (meta.uid() == uid && mode & 0o100 != 0)
                    || (meta.gid() == gid && mode & 0o010 != 0)
                    || mode & 0o001 != 0
            }
            Err(_) => true,
        })
}
