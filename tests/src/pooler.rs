//! PgBouncer in front of a test database, as managed and serverless deployments run it
//! (Debian's `pgbouncer` package; it drops to the `postgres` user when started as root, since it
//! refuses to run as root).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rowguard::dev::postgres::{free_port, is_root};

/// A running PgBouncer; stopped when dropped.
#[derive(Debug)]
pub struct Pooler {
    child: Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Pooler {
    /// Pools `database` on `127.0.0.1:backend_port` with `pool_size` server connections.
    pub fn start(
        backend_port: u16,
        database: &str,
        users: &[&str],
        pool_size: u32,
        mode: &str,
    ) -> Pooler {
        let port = free_port().expect("port");
        let dir =
            std::env::temp_dir().join(format!("rowguard-pgbouncer-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("pgbouncer dir");
        let auth: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(dir.join("users.txt"), auth).expect("auth file");
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n{database} = host=127.0.0.1 port={backend_port} dbname={database}\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {auth}\npool_mode = {mode}\n\
                 default_pool_size = {pool_size}\nmax_client_conn = 200\nlogfile = {log}\n\
                 ignore_startup_parameters = extra_float_digits\n",
                auth = dir.join("users.txt").display(),
                log = dir.join("pgbouncer.log").display(),
            ),
        )
        .expect("config");
        let mut command = Command::new("pgbouncer");
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(&dir)
                .status();
            // PgBouncer drops to this user itself: the child is PgBouncer, not a wrapper, so
            // stopping it needs no process search.
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting pgbouncer (install Debian's pgbouncer package)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Pooler { child, port, dir }
    }
}

impl Drop for Pooler {
    /// SIGTERM is PgBouncer's immediate shutdown (SIGINT would wait for clients that may never
    /// leave); SIGKILL if it has not gone within five seconds.
    fn drop(&mut self) {
        crate::process::stop(
            &mut self.child,
            crate::process::Signal::SIGTERM,
            Duration::from_secs(5),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
