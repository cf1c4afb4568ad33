//! Rowguard and its helpers as real processes: waiting for readiness, stopping them.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

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

/// Sends `signal` (e.g. `-INT`, `-TERM`), waits up to `grace` for the process to exit, then kills
/// it, so a failed test never leaves a server (or its database) behind.
pub fn stop(child: &mut Child, signal: &str, grace: Duration) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}
