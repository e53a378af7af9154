//! Runner tokens, stored as their SHA-256 (a database dump gives no usable
//! token) and checked in constant time.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{Error, Result, Store, on_pool, query};

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl Store {
    /// Stores runner `name`'s token (hashed), replacing its previous one.
    pub async fn set_runner_token(&self, name: &str, token: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::EmptyTokenName(name.to_owned()));
        }
        let now = self.now();
        on_pool!(self, write pool => {
            sqlx::query(
                "INSERT INTO runner_tokens (name, token_sha256, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET token_sha256 = excluded.token_sha256, \
                 created_at = excluded.created_at",
            )
            .bind(name)
            .bind(hash(token))
            .bind(now)
            .execute(pool)
            .await
            .map_err(query("store a runner token"))?;
        });
        Ok(())
    }

    /// Removes runner `name`'s token; answers whether it had one.
    pub async fn remove_runner_token(&self, name: &str) -> Result<bool> {
        on_pool!(self, write pool => {
            Ok(sqlx::query("DELETE FROM runner_tokens WHERE name = $1")
                .bind(name)
                .execute(pool)
                .await
                .map_err(query("remove a runner token"))?
                .rows_affected()
                > 0)
        })
    }

    /// The runner whose token `token` is, if any. Every stored hash is
    /// compared in constant time, with no early exit, so the time taken
    /// tells nothing about how close a guess was.
    pub async fn verify_runner_token(&self, token: &str) -> Result<Option<String>> {
        let presented = hash(token);
        let rows: Vec<(String, Vec<u8>)> = on_pool!(self, read pool => {
            sqlx::query_as("SELECT name, token_sha256 FROM runner_tokens")
                .fetch_all(pool)
                .await
                .map_err(query("read runner tokens"))?
        });
        let mut found = None;
        for (name, stored) in rows {
            let matches: Choice = stored.as_slice().ct_eq(presented.as_slice());
            if bool::from(matches) {
                found = Some(name);
            }
        }
        Ok(found)
    }
}
