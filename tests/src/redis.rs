//! A real Redis for the quota specs: `redis-server` as a child process on a free loopback port,
//! with nothing persisted, stopped when dropped.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{Signal, StopOnDrop, stop};

#[derive(Debug)]
pub struct TestRedis {
    server: Option<StopOnDrop>,
    port: u16,
}

impl TestRedis {
    pub fn start() -> TestRedis {
        let port = rowguard::dev::postgres::free_port().expect("a free port");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let redis = TestRedis {
            server: Some(StopOnDrop(child)),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server outright (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            stop(&mut server.0, Signal::SIGKILL, Duration::from_secs(5));
        }
    }
}
