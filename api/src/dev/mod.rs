//! `rowguard dev`: an embedded database, demo data and a development identity provider.

pub mod postgres;
