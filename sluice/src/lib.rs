//! The `sluice` binary's library half: config loading, wiring of the stages, and the CLI
//! commands, kept in a library so integration tests can reach them. Command code (argument
//! handling, reports, exit statuses) lives here, one module per command (`*_cmd`, `reconcile`);
//! the other crates keep the reusable functions a command calls.

pub mod admin;
pub mod config;
pub mod dlq_cmd;
pub mod log_cmd;
pub mod reconcile;
pub mod run;
pub mod transform_cmd;
