//! The CLI commands: thin I/O around the pure modules.

pub mod check;
pub mod migrate;
pub mod next;
pub mod run;

use std::path::PathBuf;

use crate::config::Config;
use crate::entry::Context;

/// Schedule paths from the command line, else from the config.
pub fn schedule_paths(args: &[PathBuf], config: &Config) -> Vec<PathBuf> {
    if args.is_empty() {
        config.schedule_paths.clone()
    } else {
        args.to_vec()
    }
}

/// Validation settings that come from the config.
pub fn context(config: &Config) -> Context {
    Context {
        default_tz: config.timezone,
        max_message_bytes: config.sqs.max_message_bytes,
    }
}
