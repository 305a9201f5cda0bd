//! Integration tests, compiled into one binary.

mod cli;
mod golden;
