//! First-boot setup: validating what the wizard sends and recording it.
//!
//! Every field is checked before anything is written, and the write is one
//! transaction, so a refused or interrupted setup leaves the device exactly
//! as unset as before.

use serde::Deserialize;
use utoipa::ToSchema;

use crate::auth::{PasswordHasher, check_new_password};
use crate::field_error::FieldError;
use crate::state::{SetupRecord, StateDb, StateError};
use crate::system::{TimeZones, normalize_device_name};

/// The name of the one admin account setup creates.
pub const ADMIN_USER: &str = "admin";

/// What the wizard asks for.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// A DNS label: letters, digits and hyphens, at most 63. The device answers at `NAME.local`.
    #[schema(example = "ddaemon", min_length = 1, max_length = 63)]
    pub device_name: String,
    /// At least 10 characters.
    #[schema(min_length = 10, max_length = 1024)]
    pub password: String,
    /// The same password again.
    pub password_confirm: String,
    /// A tz database name such as `Europe/Berlin`, or `UTC`.
    #[schema(example = "UTC")]
    pub timezone: String,
}

/// Why setup did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A field was refused.
    #[error(transparent)]
    Field(#[from] FieldError),
    /// Setup was already done.
    #[error("the device is already set up; log in instead")]
    AlreadySetUp,
    /// Hashing or the database failed.
    #[error("setup could not be saved: {0}")]
    Internal(String),
}

impl From<StateError> for SetupError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::AlreadySetUp => Self::AlreadySetUp,
            other => Self::Internal(other.to_string()),
        }
    }
}

/// Checks every field, in the order the page shows them.
pub fn validate(request: &SetupRequest, zones: &TimeZones) -> Result<(String, String), FieldError> {
    let device_name = normalize_device_name(&request.device_name)?;
    check_new_password(&request.password, &request.password_confirm)?;
    let timezone = zones.check(&request.timezone)?;
    Ok((device_name, timezone))
}

/// Validates and records setup; returns the device name as stored.
pub async fn run_setup(
    db: &StateDb,
    hasher: &PasswordHasher,
    zones: &TimeZones,
    request: SetupRequest,
) -> Result<String, SetupError> {
    // A cheap early refusal, before the fields: a repeated setup is a
    // conflict whatever it holds. The transaction checks again under the
    // write lock.
    if db.device_settings().await?.setup_complete() {
        return Err(SetupError::AlreadySetUp);
    }
    let (device_name, timezone) = validate(&request, zones)?;
    let nt_hash = crate::auth::nt_hash(&request.password);
    let password_hash = hasher
        .hash(request.password)
        .await
        .map_err(|e| SetupError::Internal(e.to_string()))?;
    db.complete_setup(SetupRecord {
        device_name: device_name.clone(),
        timezone: timezone.clone(),
        admin_name: ADMIN_USER.to_owned(),
        password_hash,
        nt_hash,
    })
    .await?;
    tracing::info!(%device_name, %timezone, "setup complete");
    Ok(device_name)
}
