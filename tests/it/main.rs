//! Integration tests, compiled into one binary.

#![allow(
    clippy::disallowed_methods,
    reason = "process tests compare with the real clock of the processes they start"
)]

mod beat;
mod cli;
mod clock;
mod contract;
mod django;
mod e2e;
mod entries;
mod failover;
mod faults;
mod freshness;
mod golden;
mod harness;
mod hostile;
mod http;
mod intake;
mod intake_e2e;
mod intake_golden;
mod jobs;
mod ops;
mod outage;
mod page;
mod pg;
mod readme;
mod releaser;
mod reload;
mod restart;
mod run_errors;
mod sentry;
mod stack;
mod status;
mod store;
