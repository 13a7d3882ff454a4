//! Dynamic DNS: keeps `*.DOMAIN` pointing at the network's public address,
//! through RFC 2136 updates signed with TSIG.

use std::net::Ipv4Addr;
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::dns_update::{Change, Record, RecordKind, TsigAlgorithm, TsigKey, UpdateError, update};
use crate::field_error::FieldError;

/// Where updates go and how they are signed (stored with the domain).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DdnsConfig {
    /// `host:port` of the DNS server that takes updates (the zone's primary).
    pub server: String,
    pub zone: String,
    pub key_name: String,
    pub key_algorithm: String,
    /// Base64, as in BIND's key files.
    pub key_secret: String,
    /// An http(s) URL answering the public address as text, or the address.
    pub address_from: String,
}

/// `PUT /api/v1/domain/ddns`; an empty `server` turns dynamic DNS off.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct DdnsRequest {
    /// The DNS server taking updates: `ns1.example.org` or `host:port`.
    pub server: String,
    /// The zone; the domain when empty.
    pub zone: String,
    pub key_name: String,
    /// `hmac-sha256` (the default) or `hmac-sha512`.
    pub key_algorithm: String,
    /// The key's secret, base64 (BIND's `tsig-keygen` prints it).
    pub key_secret: String,
    /// Where the public address comes from: `upnp` (the router says it),
    /// an http(s) URL that answers it as text (a what-is-my-address
    /// service), or the address itself when it never changes.
    pub address_from: String,
}

/// What the Domain page shows about dynamic DNS.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DdnsStatus {
    pub server: String,
    pub zone: String,
    pub key_name: String,
    pub address_from: String,
    /// The address last sent to the server.
    pub address: Option<String>,
    /// Unix seconds of the last successful update.
    pub updated_at: Option<i64>,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// A TSIG key as BIND's `tsig-keygen` writes it:
/// `key "NAME" { algorithm ALG; secret "BASE64"; };` (name, algorithm, secret).
pub fn parse_key_file(text: &str) -> Option<(String, String, String)> {
    let (head, body) = text.split_once('{')?;
    let name = head
        .trim()
        .strip_prefix("key")?
        .trim()
        .trim_matches('"')
        .to_owned();
    let body = body.split('}').next()?;
    let mut algorithm = None;
    let mut secret = None;
    for statement in body.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((word, value)) = statement.split_once(char::is_whitespace) else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match word {
            "algorithm" => algorithm = Some(value),
            "secret" => secret = Some(value),
            _ => {}
        }
    }
    (!name.is_empty()).then_some(())?;
    Some((name, algorithm?, secret?))
}

impl DdnsRequest {
    /// The settings this asks for; `None` turns dynamic DNS off. An empty
    /// secret keeps `previous`'s key (the page never shows it again).
    pub fn check(
        self,
        domain: &str,
        previous: Option<&DdnsConfig>,
    ) -> Result<Option<DdnsConfig>, FieldError> {
        let server = self.server.trim();
        if server.is_empty() {
            return Ok(None);
        }
        let server = if server
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            server.to_owned()
        } else {
            format!("{server}:53")
        };
        if server.contains(char::is_whitespace) || server.contains('/') {
            return Err(FieldError::new(
                "server",
                "give the DNS server as a name or address, optionally with :port, e.g. ns1.example.org or 192.0.2.53:53",
            ));
        }
        let zone = match self.zone.trim().trim_end_matches('.') {
            "" => domain.to_owned(),
            zone => zone.to_ascii_lowercase(),
        };
        if !(domain == zone || domain.ends_with(&format!(".{zone}"))) {
            return Err(FieldError::new(
                "zone",
                format!(
                    "{domain} is not inside the zone {zone}; give the zone that holds it, or leave it empty"
                ),
            ));
        }
        let key_name = self.key_name.trim().trim_end_matches('.').to_owned();
        if key_name.is_empty() || key_name.contains(char::is_whitespace) {
            return Err(FieldError::new(
                "key_name",
                "give the TSIG key's name as the server knows it (the name in its `key \"...\"` block)",
            ));
        }
        let kept = previous.filter(|p| self.key_secret.trim().is_empty() && p.key_name == key_name);
        let key_algorithm = match (self.key_algorithm.trim(), kept) {
            ("", Some(p)) => p.key_algorithm.clone(),
            ("", None) => "hmac-sha256".to_owned(),
            (name, _) => name.to_ascii_lowercase(),
        };
        if TsigAlgorithm::from_name(&key_algorithm).is_none() {
            return Err(FieldError::new(
                "key_algorithm",
                "use hmac-sha256 or hmac-sha512",
            ));
        }
        let key_secret = match kept {
            Some(p) => p.key_secret.clone(),
            None => self.key_secret.trim().to_owned(),
        };
        if base64::engine::general_purpose::STANDARD
            .decode(&key_secret)
            .map_or(true, |k| k.is_empty())
        {
            return Err(FieldError::new(
                "key_secret",
                "is not base64; paste the secret from the server's key file (the text between the quotes)",
            ));
        }
        let address_from = self.address_from.trim().to_owned();
        let is_url = address_from.starts_with("http://") || address_from.starts_with("https://");
        if !is_url && address_from != "upnp" && address_from.parse::<Ipv4Addr>().is_err() {
            return Err(FieldError::new(
                "address_from",
                "give `upnp` (ask the router), an http(s) URL that answers the public address as text, or the address itself, e.g. 203.0.113.7",
            ));
        }
        Ok(Some(DdnsConfig {
            server,
            zone,
            key_name,
            key_algorithm,
            key_secret,
            address_from,
        }))
    }
}

impl DdnsConfig {
    fn key(&self) -> Result<TsigKey, String> {
        Ok(TsigKey {
            name: self.key_name.clone(),
            algorithm: TsigAlgorithm::from_name(&self.key_algorithm)
                .ok_or_else(|| format!("unknown algorithm {}", self.key_algorithm))?,
            secret: base64::engine::general_purpose::STANDARD
                .decode(&self.key_secret)
                .map_err(|e| e.to_string())?,
        })
    }

    /// The public address as the configured source says it now.
    pub async fn current_address(&self) -> Result<Ipv4Addr, FieldError> {
        if let Ok(fixed) = self.address_from.parse() {
            return Ok(fixed);
        }
        let refuse = |why: String| FieldError::new("address_from", why);
        if self.address_from == "upnp" {
            return match super::port_forward::external_address()
                .await
                .map_err(refuse)?
            {
                std::net::IpAddr::V4(ip) => Ok(ip),
                std::net::IpAddr::V6(ip) => {
                    Err(refuse(format!("the router says {ip}, not an IPv4 address")))
                }
            };
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| refuse(e.to_string()))?;
        let response = client
            .get(&self.address_from)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| refuse(format!("{} did not answer: {e}", self.address_from)))?;
        let text = response.text().await.map_err(|e| refuse(e.to_string()))?;
        text.trim().parse().map_err(|_| {
            refuse(format!(
                "{} answered {:?}, not an IPv4 address",
                self.address_from,
                text.chars().take(60).collect::<String>()
            ))
        })
    }

    /// Points `*.DOMAIN` at `address`. A refused key is the owner's to fix
    /// and names its field.
    pub async fn push(&self, domain: &str, address: Ipv4Addr) -> Result<(), FieldError> {
        let change = Change::Replace {
            name: format!("*.{domain}"),
            record: Record::A(address),
        };
        self.change(&[change]).await
    }

    /// Sets the TXT record an ACME DNS-01 challenge for `name` looks for.
    pub async fn set_challenge(&self, name: &str, value: &str) -> Result<(), FieldError> {
        let change = Change::Replace {
            name: format!("_acme-challenge.{name}"),
            record: Record::Txt(value.to_owned()),
        };
        self.change(&[change]).await
    }

    /// Removes it again once the CA has looked.
    pub async fn clear_challenge(&self, name: &str) -> Result<(), FieldError> {
        let change = Change::Delete {
            name: format!("_acme-challenge.{name}"),
            kind: RecordKind::Txt,
        };
        self.change(&[change]).await
    }

    async fn change(&self, changes: &[Change]) -> Result<(), FieldError> {
        let key = self.key().map_err(|e| FieldError::new("key_secret", e))?;
        update(&self.server, &self.zone, changes, &key)
            .await
            .map_err(|err| {
                let field = match &err {
                    UpdateError::Refused(text) if text.starts_with("NOTAUTH") => "key_secret",
                    UpdateError::Refused(text) if text.starts_with("NOTZONE") => "zone",
                    _ => "server",
                };
                FieldError::new(field, err.to_string())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_key_files_are_read() {
        let file = "key \"ddns-key\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0\";\n};\n";
        assert_eq!(
            parse_key_file(file),
            Some(("ddns-key".into(), "hmac-sha256".into(), "c2VjcmV0".into()))
        );
        assert_eq!(parse_key_file("nothing here"), None);
        let tricky = "key \"secret-algorithm\" { algorithm hmac-sha512; secret \"c2VjcmV0\"; };";
        assert_eq!(
            parse_key_file(tricky),
            Some((
                "secret-algorithm".into(),
                "hmac-sha512".into(),
                "c2VjcmV0".into()
            ))
        );
    }

    #[test]
    fn settings_name_the_field_at_fault() {
        let good = DdnsRequest {
            server: "127.0.0.1:5353".into(),
            key_name: "ddns-key".into(),
            key_secret: "c2VjcmV0".into(),
            address_from: "203.0.113.7".into(),
            ..DdnsRequest::default()
        };
        let config = good
            .clone()
            .check("home.example.org", None)
            .expect("good")
            .expect("on");
        assert_eq!(config.zone, "home.example.org");
        assert_eq!(config.key_algorithm, "hmac-sha256");
        let plain = DdnsRequest {
            server: "ns1.example.org".into(),
            ..good.clone()
        };
        assert_eq!(
            plain
                .check("example.org", None)
                .expect("ok")
                .expect("on")
                .server,
            "ns1.example.org:53"
        );
        let cases = [
            (
                "zone",
                DdnsRequest {
                    zone: "example.net".into(),
                    ..good.clone()
                },
            ),
            (
                "key_name",
                DdnsRequest {
                    key_name: " ".into(),
                    ..good.clone()
                },
            ),
            (
                "key_algorithm",
                DdnsRequest {
                    key_algorithm: "hmac-md5".into(),
                    ..good.clone()
                },
            ),
            (
                "key_secret",
                DdnsRequest {
                    key_secret: "not base64!".into(),
                    ..good.clone()
                },
            ),
            (
                "address_from",
                DdnsRequest {
                    address_from: "my router".into(),
                    ..good.clone()
                },
            ),
        ];
        for (field, request) in cases {
            assert_eq!(
                request.check("example.org", None).expect_err(field).field,
                field
            );
        }
        assert!(
            DdnsRequest::default()
                .check("example.org", None)
                .expect("off")
                .is_none()
        );
        // The page sends no secret when only other fields change.
        let previous = good
            .clone()
            .check("example.org", None)
            .expect("ok")
            .expect("on");
        let resaved = DdnsRequest {
            key_secret: String::new(),
            ..good.clone()
        };
        let kept = resaved
            .check("example.org", Some(&previous))
            .expect("ok")
            .expect("on");
        assert_eq!(kept.key_secret, previous.key_secret);
    }
}
