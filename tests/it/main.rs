//! Integration tests, compiled into one binary.

mod cli;
mod e2e;
mod golden;
mod pg;
mod run_errors;
mod stack;
mod store;
