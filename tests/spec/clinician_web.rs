//! The reference web app (`examples/clinician-web`) as a newcomer meets it: `rowguard dev`
//! serves it, and a real browser logs in through the dev provider's login page.

use std::process::Command;
use std::time::Duration;

use crate::commands::{Running, dev_command};
use rowguard::dev::postgres::free_port;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinician_logs_in_edits_a_note_resolves_a_conflict_and_a_coordinator_sees_no_notes() {
    let app_dir = rowguard_tests::browser::web_app();
    let script = rowguard_tests::browser::script("clinician-web.mjs");
    let data_dir = std::env::temp_dir().join(format!("rowguard-dev-web-{}", std::process::id()));
    let port = free_port().expect("port");
    let mut command = dev_command(&data_dir, port);
    command.env("ROWGUARD_DEV_APP_DIR", &app_dir);
    let mut dev = Running::start(command);
    dev.wait_for_line("Rowguard dev is ready", Duration::from_secs(120));
    let web_line = dev.wait_for_line("Web app:", Duration::from_secs(5));
    let app_url = format!("http://127.0.0.1:{port}/app/");
    assert!(web_line.contains(&app_url), "{web_line}");

    // Alice is on the care team of demo patients 1–25 (dev's seed).
    let alice: Vec<String> = (1..=25).map(|n| format!("DEMO-{n:04}")).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("APP_URL", &app_url)
            .env("ALICE_MRNS", alice.join(","))
            .output()
            .expect("running node (install Node.js)")
    })
    .await
    .expect("browser task");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("clinician web app browser test: {report}");
    assert!(
        output.status.success(),
        "the reference web app did not behave:\n{report}\n{}\nrowguard dev stderr:\n{}",
        String::from_utf8_lossy(&output.stderr),
        dev.stderr_text()
    );
    drop(dev);
    let _ = std::fs::remove_dir_all(&data_dir);
}
