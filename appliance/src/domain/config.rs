//! The owner's domain settings: as stored (JSON in `settings`), as asked
//! for, and as checked.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::field_error::FieldError;

/// Let's Encrypt's production directory: the CA used unless the owner
/// names another.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// What the device keeps about the owner's domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// `example.org`: apps answer at `APP.example.org` once public.
    pub domain: String,
    /// The ACME CA's directory URL.
    pub acme_directory: String,
    /// Where the CA sends expiry warnings; none is allowed.
    #[serde(default)]
    pub acme_email: Option<String>,
    /// The root certificate (PEM) of a CA that is not publicly trusted, for
    /// an ACME CA of the owner's own (step-ca at home, or a test CA).
    #[serde(default)]
    pub acme_ca: Option<String>,
    /// The apps that answer on the internet.
    #[serde(default)]
    pub public_apps: BTreeSet<String>,
    /// Dynamic DNS, when the owner set it up.
    #[serde(default)]
    pub ddns: Option<super::ddns::DdnsConfig>,
    /// Whether the router may be asked (UPnP-IGD) to forward 80 and 443.
    #[serde(default)]
    pub port_forwarding: bool,
}

/// `PUT /api/v1/domain`: the domain and its CA. An empty domain forgets it
/// (and makes every app private again).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct DomainRequest {
    /// A domain the owner controls, e.g. `example.org`; empty to forget it.
    pub domain: String,
    /// The ACME directory URL; Let's Encrypt when empty, unchanged when absent.
    #[serde(default)]
    pub acme_directory: Option<String>,
    /// Unchanged when absent; empty for none.
    #[serde(default)]
    pub acme_email: Option<String>,
    /// PEM root certificate of a private ACME CA; empty for a public CA,
    /// unchanged when absent.
    #[serde(default)]
    pub acme_ca: Option<String>,
    /// Let the device ask the router (UPnP-IGD) to forward ports 80 and 443
    /// while an app is public; unchanged when absent.
    #[serde(default)]
    pub port_forwarding: Option<bool>,
}

impl DomainRequest {
    /// The settings this asks for, keeping `public_apps` from `previous`;
    /// `None` forgets the domain.
    pub fn check(
        self,
        previous: Option<&DomainConfig>,
    ) -> Result<Option<DomainConfig>, FieldError> {
        let domain = self
            .domain
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if domain.is_empty() {
            return Ok(None);
        }
        check_domain(&domain)?;
        // An absent field keeps what it was; an empty one goes back to
        // the default.
        let acme_directory = match self.acme_directory.as_deref().map(str::trim) {
            None => previous.map_or_else(|| LETS_ENCRYPT.to_owned(), |p| p.acme_directory.clone()),
            Some("") => LETS_ENCRYPT.to_owned(),
            Some(url) => check_directory(url)?,
        };
        let acme_email = match self.acme_email.as_deref().map(str::trim) {
            None => previous.and_then(|p| p.acme_email.clone()),
            Some("") => None,
            Some(email) => Some(check_email(email)?),
        };
        let acme_ca = match self.acme_ca.as_deref().map(str::trim) {
            None => previous.and_then(|p| p.acme_ca.clone()),
            Some("") => None,
            Some(pem) => Some(check_ca(pem)?),
        };
        // A new domain starts with every app private: being public under
        // one name is no consent to being public under another.
        let same = previous.filter(|p| p.domain == domain);
        let public_apps = same.map(|p| p.public_apps.clone()).unwrap_or_default();
        // Dynamic DNS names the zone of this domain; another domain needs
        // it set up again.
        let ddns = same.and_then(|p| p.ddns.clone());
        let port_forwarding = self
            .port_forwarding
            .unwrap_or_else(|| previous.is_some_and(|p| p.port_forwarding));
        Ok(Some(DomainConfig {
            domain,
            acme_directory,
            acme_email,
            acme_ca,
            public_apps,
            ddns,
            port_forwarding,
        }))
    }
}

/// Refuses what cannot be a registered domain with room for app names.
fn check_domain(domain: &str) -> Result<(), FieldError> {
    let refuse = |why: &str| Err(FieldError::new("domain", why.to_owned()));
    if domain.ends_with(".local") || domain == "local" {
        return refuse(
            "`.local` is the home network's own; give a domain registered on the internet, e.g. example.org",
        );
    }
    // An app's label and its dot must still fit in 253 characters.
    if domain.len() > 253 - 64 {
        return refuse("is too long to put app names in front of it; use a shorter domain");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return refuse("needs at least one dot, e.g. example.org or home.example.org");
    }
    for label in &labels {
        let good = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !good {
            return refuse(
                "may hold only letters, digits, hyphens and dots (no `*`, no spaces, no hyphen at either end of a part); \
                 a name with accents must be given in its xn-- form",
            );
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return refuse("is an address, not a domain; give the domain that points at this network");
    }
    Ok(())
}

fn check_directory(url: &str) -> Result<String, FieldError> {
    let parsed: Result<axum::http::Uri, _> = url.parse();
    match parsed {
        Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => Ok(url.to_owned()),
        _ => Err(FieldError::new(
            "acme_directory",
            format!(
                "{url:?} is not an https:// URL; give the CA's directory, e.g. {LETS_ENCRYPT}, or leave it empty for Let's Encrypt"
            ),
        )),
    }
}

fn check_email(email: &str) -> Result<String, FieldError> {
    let well_formed = email
        .split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !host.contains('@'))
        && !email.contains(char::is_whitespace)
        && !email.contains(',');
    if well_formed {
        Ok(email.to_owned())
    } else {
        Err(FieldError::new(
            "acme_email",
            format!(
                "{email:?} is not an email address; give one like you@example.org, or leave it empty"
            ),
        ))
    }
}

fn check_ca(pem: &str) -> Result<String, FieldError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let mut roots = rustls::RootCertStore::empty();
    let good = !certs.is_empty()
        && certs
            .into_iter()
            .all(|c| c.ok().is_some_and(|der| roots.add(der).is_ok()));
    if good {
        Ok(format!("{pem}\n"))
    } else {
        Err(FieldError::new(
            "acme_ca",
            "is not a PEM certificate; paste the CA's root certificate (-----BEGIN CERTIFICATE-----), or leave it empty for a public CA",
        ))
    }
}

/// Refuses an app name that would not be one DNS label under the domain.
pub fn check_app_label(app: &str) -> Result<(), FieldError> {
    let good = !app.is_empty()
        && app.len() <= 63
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if good {
        Ok(())
    } else {
        Err(FieldError::new(
            "app",
            format!(
                "{app:?} cannot be a name under a domain; only apps with lower-case letters, digits and hyphens can be public"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(domain: &str) -> DomainRequest {
        DomainRequest {
            domain: domain.into(),
            ..DomainRequest::default()
        }
    }

    #[test]
    fn domains_are_normalised_and_bad_ones_name_the_field() {
        let config = request(" Example.ORG. ")
            .check(None)
            .expect("good")
            .expect("set");
        assert_eq!(config.domain, "example.org");
        assert_eq!(config.acme_directory, LETS_ENCRYPT);
        assert!(request("").check(None).expect("empty forgets").is_none());
        for bad in [
            "example",
            "home.local",
            "*.example.org",
            "exa mple.org",
            "-a.example.org",
            "a..org",
            "10.0.0.1",
        ] {
            let err = request(bad).check(None).expect_err(bad);
            assert_eq!(err.field, "domain", "{bad}");
        }
    }

    #[test]
    fn the_ca_fields_are_checked() {
        let bad_url = DomainRequest {
            acme_directory: Some("http://ca.example/dir".into()),
            ..request("example.org")
        };
        assert_eq!(
            bad_url.check(None).expect_err("http").field,
            "acme_directory"
        );
        let bad_mail = DomainRequest {
            acme_email: Some("me at example.org".into()),
            ..request("example.org")
        };
        assert_eq!(bad_mail.check(None).expect_err("mail").field, "acme_email");
        let bad_ca = DomainRequest {
            acme_ca: Some("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----".into()),
            ..request("example.org")
        };
        assert_eq!(bad_ca.check(None).expect_err("ca").field, "acme_ca");
    }

    #[test]
    fn public_apps_survive_only_the_same_domain() {
        let mut old = request("example.org")
            .check(None)
            .expect("ok")
            .expect("set");
        old.public_apps.insert("wiki".into());
        let same = request("example.org")
            .check(Some(&old))
            .expect("ok")
            .expect("set");
        assert!(same.public_apps.contains("wiki"));
        let other = request("example.net")
            .check(Some(&old))
            .expect("ok")
            .expect("set");
        assert!(other.public_apps.is_empty());
        // Fields left out keep their value; empty ones go back to the default.
        let mut private_ca = old.clone();
        private_ca.acme_directory = "https://ca.home.arpa/dir".into();
        let kept = request("example.org")
            .check(Some(&private_ca))
            .expect("ok")
            .expect("set");
        assert_eq!(kept.acme_directory, "https://ca.home.arpa/dir");
        let reset = DomainRequest {
            acme_directory: Some(String::new()),
            ..request("example.org")
        };
        let reset = reset.check(Some(&private_ca)).expect("ok").expect("set");
        assert_eq!(reset.acme_directory, LETS_ENCRYPT);
    }
}
