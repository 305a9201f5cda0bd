//! `sqsbeat migrate`: create the schema (or file) and apply pending migrations.

use crate::config::Config;
use crate::store::Access;

pub async fn run(config: &Config) -> anyhow::Result<bool> {
    let store = crate::cmd::open_store(config, Access::Write).await?;
    println!("migrations applied to {}", store.describe());
    Ok(true)
}
