//! Integration tests: real PostgreSQL, real clients, pgmux in-process. One binary, one link step.

mod admin;
#[path = "../harness/mod.rs"]
mod harness;

mod auth;
mod cancel;
mod cli;
mod clients;
mod copy;
mod deploy;
mod deploy_auth;
mod faults;
mod fleet;
mod health;
mod import;
mod layering;
mod limits;
mod metrics;
mod package;
mod parameters;
mod pgbench;
mod pipelines;
mod prepared;
mod reload;
mod session_state;
mod shutdown;
mod startup;
mod streaming;
mod takeover;
mod timeouts;
mod tls;
mod transaction_mode;
