//! Rowguard's specification, as tests against real PostgreSQL.

mod support;

mod abandoned_requests;
mod audit;
mod audit_integrity;
mod audit_sealing_replicas;
mod authentication;
mod behind_pgbouncer;
mod catalog;
mod clinician_web;
mod commands;
mod connection_reuse;
mod contract;
mod dev_login;
mod graphql_api;
mod hardening;
mod hostile_input;
mod isolation_under_concurrency;
mod migrations;
mod playground;
mod quotas;
mod reliability;
mod rls_assignments;
mod rls_clinicians;
mod rls_patients;
mod self_check;
mod telemetry;
mod tls_to_postgres;
mod trusted_documents;
