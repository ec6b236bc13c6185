//! `omniflow token create|list|revoke`: API tokens (only hashes are stored).

use anyhow::Result;

use super::config::Database;
use super::setup::open_store as open;

/// Create a token named `name`; print it once.
pub(crate) async fn create(db: &Database, name: &str) -> Result<bool> {
    anyhow::ensure!(!name.trim().is_empty(), "the token name is empty");
    let store = open(db).await?;
    let token = omniflow::api::generate_token();
    let record = store
        .create_token(name, &omniflow::api::hash_token(&token))
        .await?;
    eprintln!(
        "token {} ({}) created; it is shown once:",
        record.id, record.name
    );
    println!("{token}");
    Ok(true)
}

/// List tokens (never their values).
pub(crate) async fn list(db: &Database, json: bool) -> Result<bool> {
    let store = open(db).await?;
    let tokens = store.list_tokens().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&tokens)?);
        return Ok(true);
    }
    println!("{:<6} {:<20} {:<26} REVOKED", "ID", "NAME", "CREATED");
    for t in &tokens {
        println!(
            "{:<6} {:<20} {:<26} {}",
            t.id,
            t.name,
            t.created_at,
            t.revoked_at.as_deref().unwrap_or("-")
        );
    }
    Ok(true)
}

/// Revoke token `id`.
pub(crate) async fn revoke(db: &Database, id: i64) -> Result<bool> {
    let store = open(db).await?;
    if store.revoke_token(id).await? {
        eprintln!("token {id} revoked");
        Ok(true)
    } else {
        eprintln!("no active token {id}");
        Ok(false)
    }
}
