//! Every setting Rowguard reads, in one tree: each is an environment variable (or the matching
//! `--flag`, or a line of the file `ROWGUARD_CONFIG` names), validated at start-up with a message
//! that names it. Each command's settings flatten the groups it needs; each default is written
//! once, in the group's clap attributes, and `Default` impls read them from there.

pub mod api;
pub mod audit;
pub mod database;
pub mod dev;
pub mod file;
pub mod logging;
pub mod oidc;
pub mod quota;
pub mod serve;

use clap::{Args, Command, FromArgMatches};

pub use api::{ApiLimits, ApiSettings, PlaygroundAssets, TrustMode};
pub use audit::AuditSettings;
pub use database::{DatabaseSettings, MigrationSettings, is_loopback_ip_literal};
pub use dev::DevSettings;
pub use logging::{LogFormat, LogSettings};
pub use oidc::{OidcSettings, RoleMap, TokenKind};
pub use quota::{QuotaMode, QuotaSettings};
pub use serve::ServeSettings;

/// A settings group as clap fills it from `args` alone: its defaults, and what `args` give. The
/// environment is ignored, so the result is the same wherever it is called.
pub fn from_args<T: Args + FromArgMatches>(args: &[&str]) -> Result<T, clap::Error> {
    let command = T::augment_args(Command::new("rowguard").no_binary_name(true))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command.try_get_matches_from(args)?;
    T::from_arg_matches(&matches)
}

/// A settings group at its defaults (for groups where every setting has one).
pub fn defaults<T: Args + FromArgMatches>() -> T {
    match from_args(&[]) {
        Ok(settings) => settings,
        // Only reachable for a group with a required setting, which is a programming error.
        Err(e) => panic!("settings group without defaults: {e}"),
    }
}
