//! The Node programs the specs run: the browser driver (Debian's Chromium through playwright-core,
//! no browser download) and real GraphQL clients, each installed from its package-lock.json the
//! first time it is needed, so the README's test command works on a fresh clone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// `tests/browser/<name>`, with the driver's npm packages installed.
pub fn script(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    install(&dir, "playwright-core");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "the browser tests drive Debian's Chromium: apt-get install chromium"
    );
    dir.join(name)
}

/// `tests/clients/<name>` (GraphQL client programs run by Node), with their npm packages
/// installed from the lockfile.
pub fn client_script(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients");
    install(&dir, "@apollo/client");
    dir.join(name)
}

/// `examples/clinician-web`, built (`npm ci`, `npm run build`) when it has no `dist/` yet, so the
/// README's test command works on a fresh clone. CI builds it first, after checking its operations
/// against the contract.
pub fn web_app() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/clinician-web")
        .canonicalize()
        .expect("examples/clinician-web");
    install(&dir, "@apollo/client");
    static BUILDING: Mutex<()> = Mutex::new(());
    let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join("dist/index.html").exists() {
        let output = Command::new("npm")
            .args(["run", "build", "--prefix"])
            .arg(&dir)
            .output()
            .unwrap_or_else(|e| panic!("running npm to build the web app: {e}"));
        assert!(
            output.status.success(),
            "npm run build in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    dir
}

/// Installs `dir`'s npm packages from its lockfile (`npm ci`) unless `node_modules/<marker>` is
/// there already.
pub fn install(dir: &Path, marker: &str) {
    // Specs run in parallel; one `npm ci` at a time.
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _guard = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if dir
        .join("node_modules")
        .join(marker)
        .join("package.json")
        .exists()
    {
        return;
    }
    let output = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--prefix"])
        .arg(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("running npm to install the browser driver (install Node.js): {e}")
        });
    assert!(
        output.status.success(),
        "npm ci --prefix {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
