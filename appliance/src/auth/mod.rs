//! Who may do what: password hashing, sessions, CSRF tokens and the login
//! rate limit.
//!
//! It owns the rules; the web module only carries tokens in cookies and
//! headers. Sessions live in the state database (`state::accounts`), the rate
//! limiter in memory (a restart forgets failed attempts, which only helps
//! the owner).

mod login;
mod password;
mod rate_limit;
mod token;

pub use login::{LoginError, LoginOk, Logins, SESSION_LIFETIME_SECS};
pub use password::{
    MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, PasswordHasher, check_new_password, nt_hash,
};
pub use rate_limit::{LoginLimiter, RateLimited};
pub use token::{constant_time_eq, new_token, token_hash};
