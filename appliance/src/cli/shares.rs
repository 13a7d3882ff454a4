//! `ddaemon share add|ls|rm`, through the running supervisor.

use std::fmt::Write as _;

use hyper::Method;

use super::api_client::{ApiClient, ClientError};
use crate::state::Share;

pub async fn list(client: &ApiClient) -> Result<Vec<Share>, ClientError> {
    client.get_json("/api/v1/shares").await
}

/// The shares as the Storage page words them.
pub fn shares_text(shares: &[Share]) -> String {
    let mut out = String::new();
    if shares.is_empty() {
        out.push_str("No folder is shared.\n");
    }
    for s in shares {
        let mut notes = vec![if s.read_only {
            "read-only"
        } else {
            "read-write"
        }];
        if s.time_machine {
            notes.push("Time Machine");
        }
        if s.nfs {
            notes.push("NFS");
        }
        let _ = writeln!(
            out,
            "{}  {}  {}  users {}",
            s.name,
            s.path,
            notes.join(", "),
            s.users.join(",")
        );
    }
    out
}

pub async fn add(client: &ApiClient, request: &serde_json::Value) -> Result<Share, ClientError> {
    client.post_json_as("/api/v1/shares", request).await
}

pub async fn remove(client: &ApiClient, name: &str) -> Result<(), ClientError> {
    let path = format!("/api/v1/shares/{}", urlencoding_path(name));
    client.empty(Method::DELETE, &path).await.map(drop)
}

/// A share name (letters, digits, spaces, `-_.`) as one path segment.
fn urlencoding_path(name: &str) -> String {
    name.replace(' ', "%20")
}
