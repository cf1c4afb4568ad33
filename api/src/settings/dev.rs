//! `rowguard dev`. Deliberately none of `serve`'s database or listen settings: a shell with
//! production variables set must not point dev (which enrols demo users and hands out their
//! tokens without a login) at anything but the private cluster it creates.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Settings of `rowguard dev`.
#[derive(Debug, Clone, Args)]
pub struct DevSettings {
    /// Directory for the embedded database, the dev provider's key and the demo audit key. When
    /// the default is not reachable by the `postgres` user (running as root in a private home
    /// directory), dev picks one under /var/tmp and says so.
    #[arg(long, env = "ROWGUARD_DEV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Port of the embedded PostgreSQL (default: a free one).
    #[arg(long, env = "ROWGUARD_DEV_PG_PORT")]
    pub pg_port: Option<u16>,

    /// Port of the development identity provider (default: a free one).
    #[arg(long, env = "ROWGUARD_DEV_IDP_PORT", default_value_t = 0)]
    pub idp_port: u16,

    /// Where the dev gateway listens: a loopback address only (dev mints tokens for anyone).
    #[arg(long, env = "ROWGUARD_DEV_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The reference web app's directory: dev serves its `dist/` build at `/app/` and loads its
    /// `persisted-query-manifest.json` as trusted documents in `log` mode.
    #[arg(
        long,
        env = "ROWGUARD_DEV_APP_DIR",
        default_value = "examples/clinician-web"
    )]
    pub app_dir: PathBuf,
}
