//! A PostgreSQL server that only accepts TLS, with a certificate for `localhost` from a test CA
//! made for this run (by the `openssl` command line: no key material in the repository).

use std::path::{Path, PathBuf};
use std::process::Command;

use migration::RoleNames;
use rowguard::dev::postgres::{LocalCluster, free_port, is_root};

/// A throwaway certificate authority.
#[derive(Debug)]
pub struct TestCa {
    pub cert: PathBuf,
    key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (install the openssl package)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

const EC_KEY: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

impl TestCa {
    /// Creates a CA named `name` in `dir`.
    pub fn create(dir: &Path, name: &str) -> TestCa {
        let (cert, key) = (format!("{name}.crt"), format!("{name}.key"));
        let subject = format!("/CN=Rowguard test CA {name}");
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2", "-subj", &subject];
        args.extend_from_slice(EC_KEY);
        args.extend_from_slice(&[
            "-keyout",
            &key,
            "-out",
            &cert,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&args, dir);
        TestCa {
            cert: dir.join(cert),
            key: dir.join(key),
        }
    }

    /// Issues a server certificate for the DNS name `host`; returns (certificate, key) paths.
    pub fn issue_server_cert(&self, dir: &Path, host: &str) -> (PathBuf, PathBuf) {
        let (cert, key, csr) = ("server.crt", "server.key", "server.csr");
        let subject = format!("/CN={host}");
        let mut args = vec!["req", "-new", "-nodes", "-subj", &subject];
        args.extend_from_slice(EC_KEY);
        args.extend_from_slice(&["-keyout", key, "-out", csr]);
        openssl(&args, dir);
        std::fs::write(
            dir.join("server.ext"),
            format!(
                "subjectAltName=DNS:{host}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("extensions file");
        let (ca_cert, ca_key) = (
            self.cert.display().to_string(),
            self.key.display().to_string(),
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                &ca_cert,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                cert,
            ],
            dir,
        );
        (dir.join(cert), dir.join(key))
    }
}

/// A migrated PostgreSQL server that refuses every connection without TLS, presenting a
/// certificate for `localhost` signed by [`TlsCluster::ca`].
#[derive(Debug)]
pub struct TlsCluster {
    cluster: LocalCluster,
    dir: PathBuf,
    pub port: u16,
    pub ca: TestCa,
    /// A CA that did not sign the server's certificate.
    pub other_ca: TestCa,
    pub roles: RoleNames,
}

impl TlsCluster {
    pub async fn start() -> TlsCluster {
        let dir = std::env::temp_dir().join(format!("rowguard-tls-{}", std::process::id()));
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).expect("pki directory");
        let ca = TestCa::create(&pki, "trusted");
        let other_ca = TestCa::create(&pki, "other");
        let (cert, key) = ca.issue_server_cert(&pki, "localhost");

        let data = dir.join("data");
        let cluster = LocalCluster::new(&data).expect("server binaries");
        cluster.init().expect("initdb");
        // Only TLS over TCP; the Unix socket (for pg_ctl) stays open to the server's own user.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        let server_cert = data.join("server.crt");
        let server_key = data.join("server.key");
        std::fs::copy(&cert, &server_cert).expect("server certificate");
        std::fs::copy(&key, &server_key).expect("server key");
        owned_by_server(&[&server_cert, &server_key, &data.join("pg_hba.conf")]);
        let port = free_port().expect("port");
        cluster
            .start(port, &["fsync=off", "ssl=on"])
            .expect("start the TLS cluster");

        let roles = RoleNames::new("rgtls").expect("prefix");
        rowguard::migrate::run(
            &rowguard::settings::MigrationSettings {
                url: format!(
                    "postgres://postgres@localhost:{port}/rowguard?sslmode=verify-full&sslrootcert={}",
                    ca.cert.display()
                ),
                role_prefix: roles.clone(),
            },
            rowguard::migrate::MigrateAction::Up,
        )
        .await
        .expect("migrate over TLS");
        TlsCluster {
            cluster,
            dir,
            port,
            ca,
            other_ca,
            roles,
        }
    }

    /// The superuser's URL, verified like the gateway's.
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://postgres@localhost:{}/rowguard?sslmode=verify-full&sslrootcert={}",
            self.port,
            self.ca.cert.display()
        )
    }

    /// The gateway's URL at `host` with `sslmode` and, if given, `sslrootcert`.
    pub fn gateway_url(&self, host: &str, sslmode: &str, root: Option<&TestCa>) -> String {
        let mut url = format!(
            "postgres://{}@{host}:{}/rowguard?sslmode={sslmode}",
            self.roles.gateway(),
            self.port
        );
        if let Some(ca) = root {
            url.push_str(&format!("&sslrootcert={}", ca.cert.display()));
        }
        url
    }
}

/// The server runs as `postgres` when the tests run as root; its key must be its own, 0600.
fn owned_by_server(files: &[&Path]) {
    use std::os::unix::fs::PermissionsExt;
    for file in files {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    if is_root() {
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .args(files)
            .status()
            .expect("chown");
        assert!(status.success(), "chown to postgres failed");
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = self.cluster.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
