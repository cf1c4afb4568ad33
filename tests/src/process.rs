//! Rowguard and its helpers as real processes: waiting for readiness, stopping them.

use std::process::Child;
use std::time::{Duration, Instant};

pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Polls `{base}/readyz` until it answers 200; false if it has not within `within`.
pub async fn ready_within(http: &reqwest::Client, base: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let status = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        if status.ok() == Some(200) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `signal` to a child process.
pub fn signal(child: &Child, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(child.id()).map_err(|_| nix::errno::Errno::ESRCH)?;
    nix::sys::signal::kill(Pid::from_raw(pid), signal)
}

/// Sends `signal` (e.g. `SIGINT`, `SIGTERM`), waits up to `grace` for the process to exit, then
/// kills it, so a failed test never leaves a server (or its database) behind.
pub fn stop(child: &mut Child, signal: Signal, grace: Duration) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = self::signal(child, signal);
        let deadline = Instant::now() + grace;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when this goes out of scope, so a
/// failed assertion never leaves it running.
#[derive(Debug)]
pub struct StopOnDrop(pub Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        stop(&mut self.0, Signal::SIGTERM, Duration::from_secs(10));
    }
}
