//! `/api/v1/secrets`: write-only secret values, encrypted at rest.
//!
//! `PUT /secrets/{name}` `{"value": "..."}` stores (or replaces) a value,
//! `DELETE /secrets/{name}` removes it, `GET /secrets` lists names and dates.
//! Values are never returned; granted HTTP requests see them through
//! `${secret:NAME}` (see `capabilities::http`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;

use super::dto_system::SecretList;
use super::error::{ApiError, parse_json};
use super::names::SecretName;
use super::openapi::ErrorBody;
use super::{ApiState, Body};
use crate::capabilities::secrets::{check_secret_name, is_reserved_secret_name};
use crate::store::{SealedSecret, now_rfc3339};

/// Body of `PUT /secrets/{name}`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PutSecret {
    /// The value (write-only: never returned).
    value: String,
}

/// The grammar is checked by the `SecretName` extractor; a reserved name
/// (the server's own configuration) is refused on top.
fn check_reserved(name: &str) -> Result<(), ApiError> {
    if is_reserved_secret_name(name) {
        return Err(ApiError::ReservedName(
            check_secret_name(name).err().unwrap_or_default(),
        ));
    }
    Ok(())
}

fn cipher(state: &ApiState) -> Result<&crate::capabilities::secrets::SecretCipher, ApiError> {
    state.config().secret_cipher.as_deref().ok_or_else(|| {
        ApiError::Unavailable("secret storage is not configured on this server".into())
    })
}

#[utoipa::path(put, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path, description = "Secret name (letters, digits, `_`)")), request_body = PutSecret, responses((status = 204, description = "Stored, encrypted at rest"), (status = 422, description = "Reserved name (`OMNIFLOW_*`, the server's configuration)", body = ErrorBody), (status = 503, description = "Secret storage not configured", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn put(
    State(state): State<ApiState>,
    SecretName(name): SecretName,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_reserved(&name)?;
    let request: PutSecret = parse_json(&body.0, false)?;
    let value = SecretString::from(request.value);
    let (nonce, ciphertext) = cipher(&state)?
        .seal(&name, &value)
        .map_err(ApiError::Internal)?;
    state
        .store()
        .put_secret(&SealedSecret {
            name: name.clone(),
            nonce,
            ciphertext,
            updated_at: now_rfc3339(),
        })
        .await?;
    state.executor().secrets().set_stored(&name, value);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path, description = "Secret name (letters, digits, `_`)")), responses((status = 204, description = "Removed"), (status = 404, description = "No such resource", body = ErrorBody), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn delete(
    State(state): State<ApiState>,
    SecretName(name): SecretName,
) -> Result<StatusCode, ApiError> {
    // A reserved name may still be deleted (a row stored before names
    // were reserved).
    if !state.store().delete_secret(&name).await? {
        return Err(ApiError::NotFound(format!("secret {name}")));
    }
    state.executor().secrets().remove_stored(&name);
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/secrets", tag = "secrets", responses((status = 200, description = "Names and dates, never values", body = SecretList), (status = 400, description = "Malformed request or unknown field", body = ErrorBody), (status = 401, description = "Missing or wrong bearer token", body = ErrorBody)))]
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<SecretList>, ApiError> {
    let secrets = state.store().sealed_secrets().await?;
    Ok(Json(SecretList {
        secrets: secrets.iter().map(Into::into).collect(),
    }))
}
