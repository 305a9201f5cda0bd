//! `sqsbeat migrate`: create the schema (or file) and apply pending migrations.

use crate::config::Config;
use crate::store::Store;

pub async fn run(config: &Config) -> anyhow::Result<bool> {
    match crate::cmd::open_store(config).await? {
        Store::Postgres(s) => println!("migrations applied to PostgreSQL schema {:?}", s.schema()),
        Store::Sqlite(_) => println!(
            "migrations applied to SQLite file {}",
            config.database_path.display()
        ),
    }
    Ok(true)
}
