//! Certificates from an ACME CA (RFC 8555). HTTP-01: the CA fetches
//! `http://NAME/.well-known/acme-challenge/TOKEN` on port 80, which the
//! supervisor answers from [`Challenges`]. DNS-01, where dynamic DNS can
//! write the zone: a TXT record at `_acme-challenge.NAME`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::config::DomainConfig;
use super::ddns::DdnsConfig;

/// Why no certificate was obtained, in words for the Domain page.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    #[error("the CA refused: {0}")]
    Ca(#[from] instant_acme::Error),
    #[error("the CA could not check {name}: {detail}")]
    Challenge { name: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the account file is unreadable: {0}")]
    Account(serde_json::Error),
}

/// The HTTP-01 answers waiting for the CA: token to key authorisation.
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<RwLock<HashMap<String, String>>>);

impl Challenges {
    /// The answer for `token`, while an order waits for it.
    pub fn answer(&self, token: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
    }

    fn set(&self, token: String, answer: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, answer);
    }

    fn forget(&self, tokens: &[String]) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        for token in tokens {
            map.remove(token);
        }
    }
}

/// The account file: which CA it belongs to, and the account's key.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// One CA account, made on first use and kept in `DATA/ddaemon/acme/`.
pub struct AcmeClient {
    account: Account,
    challenges: Challenges,
}

impl std::fmt::Debug for AcmeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeClient")
            .field("account", &self.account.id())
            .finish_non_exhaustive()
    }
}

impl AcmeClient {
    /// Opens the account for `config`'s CA, registering one the first time
    /// (or when the owner chose another CA).
    pub async fn open(
        dir: &Path,
        config: &DomainConfig,
        challenges: Challenges,
    ) -> Result<Self, AcmeError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| AcmeError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let builder = || -> Result<_, AcmeError> {
            Ok(match &config.acme_ca {
                Some(pem) => {
                    let path = dir.join("ca.pem");
                    ddaemon_runtime::fs_atomic::write_atomic_mode(&path, pem.as_bytes(), 0o644)
                        .map_err(io(&path))?;
                    Account::builder_with_root(&path)?
                }
                None => Account::builder()?,
            })
        };
        let path = dir.join("account.json");
        let stored: Option<StoredAccount> = match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(AcmeError::Account)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(AcmeError::Io { path, source }),
        };
        let account = match stored {
            Some(stored) if stored.directory == config.acme_directory => {
                builder()?.from_credentials(stored.credentials).await?
            }
            _ => {
                let contact: Vec<String> = config
                    .acme_email
                    .iter()
                    .map(|e| format!("mailto:{e}"))
                    .collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        config.acme_directory.clone(),
                        None,
                    )
                    .await?;
                let json = serde_json::to_vec(&StoredAccount {
                    directory: config.acme_directory.clone(),
                    credentials,
                })
                .map_err(AcmeError::Account)?;
                ddaemon_runtime::fs_atomic::write_atomic(&path, &json).map_err(io(&path))?;
                tracing::info!(directory = %config.acme_directory, "registered with the ACME CA");
                account
            }
        };
        Ok(Self {
            account,
            challenges,
        })
    }

    /// Orders a certificate for `name`; returns the private key and the
    /// chain, both PEM. With `dns` (dynamic DNS set up) the DNS-01
    /// challenge is answered in the zone, which needs no open port;
    /// otherwise HTTP-01 on port 80.
    pub async fn obtain(
        &self,
        name: &str,
        dns: Option<&DdnsConfig>,
    ) -> Result<(String, String), AcmeError> {
        let identifiers = [Identifier::Dns(name.to_owned())];
        let mut order = self.account.new_order(&NewOrder::new(&identifiers)).await?;
        let mut tokens = Vec::new();
        let result = self
            .answer_and_finish(name, &mut order, &mut tokens, dns)
            .await;
        self.challenges.forget(&tokens);
        if let Some(dns) = dns
            && let Err(err) = dns.clear_challenge(name).await
        {
            tracing::warn!(%name, %err, "the challenge's TXT record was not removed");
        }
        result
    }

    async fn answer_and_finish(
        &self,
        name: &str,
        order: &mut instant_acme::Order,
        tokens: &mut Vec<String>,
        dns: Option<&DdnsConfig>,
    ) -> Result<(String, String), AcmeError> {
        let kind = if dns.is_some() {
            ChallengeType::Dns01
        } else {
            ChallengeType::Http01
        };
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::Challenge {
                        name: name.to_owned(),
                        detail: format!("the authorization is {other:?}"),
                    });
                }
            }
            let mut challenge =
                authz
                    .challenge(kind.clone())
                    .ok_or_else(|| AcmeError::Challenge {
                        name: name.to_owned(),
                        detail: format!("the CA offers no {kind:?} challenge"),
                    })?;
            match dns {
                Some(dns) => {
                    let value = challenge.key_authorization().dns_value();
                    dns.set_challenge(name, &value)
                        .await
                        .map_err(|e| AcmeError::Challenge {
                            name: name.to_owned(),
                            detail: format!("the challenge's TXT record could not be set: {e}"),
                        })?;
                }
                None => {
                    let token = challenge.token.clone();
                    self.challenges.set(
                        token.clone(),
                        challenge.key_authorization().as_str().to_owned(),
                    );
                    tokens.push(token);
                }
            }
            challenge.set_ready().await?;
        }
        // The CA checks within seconds; a minute covers a slow one.
        let patience = RetryPolicy::new()
            .initial_delay(Duration::from_millis(500))
            .timeout(Duration::from_secs(90));
        let status = order.poll_ready(&patience).await?;
        if status != OrderStatus::Ready {
            return Err(AcmeError::Challenge {
                name: name.to_owned(),
                detail: why_invalid(order).await,
            });
        }
        let key_pem = order.finalize().await?;
        let chain_pem = order.poll_certificate(&patience).await?;
        Ok((key_pem, chain_pem))
    }
}

/// What the CA said was wrong, from the order or its challenges.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    if let Some(problem) = &order.state().error {
        return problem.to_string();
    }
    let mut details = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        details.extend(
            authz
                .challenges
                .iter()
                .filter_map(|c| c.error.as_ref())
                .map(|p| p.to_string()),
        );
    }
    if details.is_empty() {
        "the order became invalid; check that the name points at this network and that port 80 is forwarded to the device".into()
    } else {
        details.join("; ")
    }
}
