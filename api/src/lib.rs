//! Rowguard: a GraphQL gateway that lets PostgreSQL row level security guard patient data.
//!
//! The gateway establishes *who is asking* ([`principal`]) and opens one transaction per request
//! with that identity set ([`db::RlsScope`]); PostgreSQL's policies decide which rows exist.

pub mod audit;
pub mod auth;
pub mod cli;
pub mod connections;
pub mod db;
#[cfg(feature = "dev")]
pub mod dev;
pub mod error;
pub mod graphql;
pub mod metrics;
pub mod migrate;
pub mod playground;
pub mod principal;
pub mod quota;
pub mod routes;
pub mod server;
pub mod settings;
pub mod state;
pub mod telemetry;
pub mod trusted;
