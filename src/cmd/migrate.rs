//! `sqsbeat migrate`: create the schema and apply pending migrations.

use anyhow::Context as _;

use crate::config::Config;
use crate::store::Store;

pub async fn run(config: &Config) -> anyhow::Result<bool> {
    let url = config.database_url.as_ref().context(
        "no database configured: set [database] url, SQSBEAT_DATABASE_URL or DATABASE_URL",
    )?;
    let store = Store::connect(&url.0, &config.database_schema)
        .await
        .context("cannot migrate the database")?;
    println!("migrations applied to schema {:?}", store.schema());
    Ok(true)
}
