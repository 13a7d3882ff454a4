//! Logging in and out, and finding the session behind a cookie.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::password::{HashError, PasswordHasher};
use super::rate_limit::{LoginLimiter, RateLimited};
use super::token::{new_token, token_hash};
use crate::state::{NewSession, SessionRecord, StateDb, StateError, UserRecord, now_unix};

/// How long a session lives without being used.
pub const SESSION_LIFETIME_SECS: i64 = 7 * 24 * 3600;
/// A used session's expiry is moved at most this often, to spare the SD card.
const EXTEND_AFTER_SECS: i64 = 3600;

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The device has no admin yet.
    #[error("the device is not set up yet; finish setup first")]
    NotSetUp,
    /// Wrong user name or password.
    #[error("wrong password")]
    WrongPassword,
    /// Too many wrong passwords from this client.
    #[error("too many wrong passwords; try again in {} s", .0.retry_after_secs)]
    RateLimited(RateLimited),
    /// The state database failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The OS gave no randomness for a token.
    #[error("cannot create a session token: {0}")]
    Token(std::io::Error),
}

/// A successful login: the cookie's token and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct LoginOk {
    pub session_token: String,
    pub csrf_token: String,
    pub max_age_secs: i64,
}

/// Logins, sessions and the rate limit, over the state database.
#[derive(Clone, Debug)]
pub struct Logins {
    db: StateDb,
    hasher: PasswordHasher,
    limiter: Arc<LoginLimiter>,
}

impl Logins {
    /// Logins over `db`.
    pub fn new(db: StateDb, hasher: PasswordHasher) -> Self {
        Self {
            db,
            hasher,
            limiter: Arc::new(LoginLimiter::default()),
        }
    }

    /// Checks a password and opens a session. `client` is `None` for callers
    /// that are not rate-limited (the root-only socket).
    pub async fn login(
        &self,
        client: Option<IpAddr>,
        user_name: &str,
        password: String,
    ) -> Result<LoginOk, LoginError> {
        if let Some(ip) = client {
            self.limiter
                .begin(ip, Instant::now())
                .map_err(LoginError::RateLimited)?;
        }
        let user = self.db.user_by_name(user_name.to_owned()).await?;
        let Some(user) = user else {
            if !self.db.device_settings().await?.setup_complete() {
                return Err(LoginError::NotSetUp);
            }
            // Spend the same time as a real check so that timing does not
            // tell which user names exist.
            let _ = self.hasher.verify(password, DUMMY_HASH.to_owned()).await;
            return Err(LoginError::WrongPassword);
        };
        let nt_hash = super::nt_hash(&password);
        if !self
            .hasher
            .verify(password, user.password_hash.clone())
            .await?
        {
            tracing::warn!(user = %user.name, client = ?client, "wrong password");
            return Err(LoginError::WrongPassword);
        }
        if let Some(ip) = client {
            self.limiter.succeeded(ip);
        }
        if user.nt_hash.as_deref() != Some(nt_hash.as_str()) {
            self.db.set_nt_hash(user.id, nt_hash).await?;
        }
        self.open_session(&user, client).await
    }

    /// Opens a session for `user_name` without asking for the password again;
    /// used right after setup, which has just set it.
    pub async fn open_session_for(
        &self,
        user_name: &str,
        client: Option<IpAddr>,
    ) -> Result<LoginOk, LoginError> {
        let user = self
            .db
            .user_by_name(user_name.to_owned())
            .await?
            .ok_or(LoginError::NotSetUp)?;
        self.open_session(&user, client).await
    }

    async fn open_session(
        &self,
        user: &UserRecord,
        client: Option<IpAddr>,
    ) -> Result<LoginOk, LoginError> {
        let session_token = new_token().map_err(LoginError::Token)?;
        let csrf_token = new_token().map_err(LoginError::Token)?;
        self.db
            .insert_session(NewSession {
                token_hash: token_hash(&session_token),
                user_id: user.id,
                csrf_token: csrf_token.clone(),
                expires_at: now_unix() + SESSION_LIFETIME_SECS,
                client: client
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "local".into()),
            })
            .await?;
        tracing::info!(user = %user.name, client = ?client, "session opened");
        Ok(LoginOk {
            session_token,
            csrf_token,
            max_age_secs: SESSION_LIFETIME_SECS,
        })
    }

    /// The live session behind a cookie token, extending it when due; the
    /// flag says it was extended, so the cookie must be sent again too.
    pub async fn session(&self, token: &str) -> Result<Option<(SessionRecord, bool)>, StateError> {
        let hash = token_hash(token);
        let Some(session) = self.db.session(hash.clone()).await? else {
            return Ok(None);
        };
        let now = now_unix();
        let due = session.expires_at - now < SESSION_LIFETIME_SECS - EXTEND_AFTER_SECS;
        if due {
            self.db
                .extend_session(hash, now + SESSION_LIFETIME_SECS)
                .await?;
        }
        Ok(Some((session, due)))
    }

    /// Ends the session behind a cookie token on the server.
    pub async fn logout(&self, token: &str) -> Result<(), StateError> {
        self.db.delete_session(token_hash(token)).await
    }
}

/// An argon2id hash of a random string nobody knows, for constant-time refusals.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3cn6G8ycDx2bT9w4X8Ivj5Ez8mFHbCLM2CIcfd0a5Y4";
