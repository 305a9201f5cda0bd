//! `sqsbeat run`: argument handling; the daemon is [`crate::runtime`].

use std::path::PathBuf;

use crate::config::Config;

pub async fn run(paths: &[PathBuf], config: &Config) -> anyhow::Result<bool> {
    crate::runtime::run(&crate::cmd::schedule_paths(paths, config), config).await
}
