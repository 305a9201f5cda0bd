//! A fresh PostgreSQL database per test, in the server `DATABASE_URL` names
//! (scripts/test starts a throwaway cluster when none is given).

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};

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
