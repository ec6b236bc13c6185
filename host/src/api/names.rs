//! Path parameters that are names (`/workflows/{name}`, `/hooks/{workflow}`,
//! `/pieces/{name}`, `/secrets/{name}`), checked against the one name
//! grammar ([`crate::names`]) before a handler sees them: a bad name is
//! `400 invalid_name` stating the rule.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use super::ApiError;
use crate::names::{self, NameKind};

async fn name_from_parts<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    kind: NameKind,
) -> Result<String, ApiError> {
    let Path(name) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::InvalidRequest(e.body_text()))?;
    names::check(kind, &name).map_err(ApiError::InvalidName)?;
    Ok(name)
}

macro_rules! name_param {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        pub(super) struct $ty(pub(super) String);

        impl<S: Send + Sync> FromRequestParts<S> for $ty {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<$ty, ApiError> {
                name_from_parts(parts, state, $kind).await.map($ty)
            }
        }
    };
}

name_param!(
    /// A workflow name from the path.
    WorkflowName,
    NameKind::Workflow
);
name_param!(
    /// A piece name from the path.
    PieceName,
    NameKind::Piece
);
name_param!(
    /// A secret name from the path.
    SecretName,
    NameKind::Secret
);
