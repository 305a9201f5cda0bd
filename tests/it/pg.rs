//! A fresh PostgreSQL database per test, in the server `DATABASE_URL` names
//! (scripts/test starts a throwaway cluster when none is given).
//!
//! Every test database also holds an application's own `public.jobs` and
//! `public.entries`, with columns unlike sqsbeat's: any access that escapes
//! sqsbeat's schema hits them and fails loudly, in every test.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};

/// The application's tables that share sqsbeat's names.
pub const APPLICATION_TABLES: &str = "
    CREATE TABLE public.jobs (job_no bigserial PRIMARY KEY, title text NOT NULL, done boolean NOT NULL);
    CREATE TABLE public.entries (entry_no bigserial PRIMARY KEY, body text NOT NULL);
";

pub struct TestDb {
    pub url: String,
    name: String,
    admin: String,
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL").expect(
        "database tests need DATABASE_URL (a server where they may create databases); `scripts/test` starts a throwaway cluster",
    )
}

impl TestDb {
    pub async fn new() -> Self {
        let admin = admin_url();
        let name = format!("sqsbeat_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to DATABASE_URL");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = PgConnectOptions::from_str(&admin)
            .unwrap()
            .database(&name)
            .to_url_lossy()
            .to_string();
        let mut app = sqlx::PgConnection::connect(&url)
            .await
            .expect("connect to the test database");
        sqlx::raw_sql(APPLICATION_TABLES)
            .execute(&mut app)
            .await
            .unwrap();
        TestDb { url, name, admin }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any runtime; a small one of its own does the work.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut c)
                    .await;
                }
            });
        })
        .join();
    }
}
