//! The app manifest (`app.toml`): what an app is made of and how it runs.
//!
//! It owns the format and its validation; installing, routing and
//! announcing apps use the validated manifest. Errors name the field by its
//! path (`services[1].volumes[0].path`) and say the fix.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The manifest format this build reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Architectures an app can declare.
pub const ARCHITECTURES: [&str; 2] = ["amd64", "arm64"];

/// Catalog categories, in the order the page shows them.
pub const CATEGORIES: [&str; 8] = [
    "media",
    "books",
    "files",
    "social",
    "chat",
    "publishing",
    "network",
    "tools",
];

/// An app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    /// A DNS label: the app answers at `ID.local`.
    pub id: String,
    pub title: String,
    pub description: String,
    pub category: String,
    /// An SVG file beside the manifest.
    pub icon: String,
    /// The upstream version this manifest installs.
    pub version: String,
    pub upstream: String,
    pub architectures: Vec<String>,
    #[serde(default)]
    pub min_memory_mib: Option<u32>,
    /// How long the app may take to answer after its containers start
    /// before an install fails or an update rolls back (default 300).
    #[serde(default)]
    pub start_timeout_secs: Option<u32>,
    /// Which service serves the web page, on which port.
    pub web: WebEntry,
    /// Secrets generated on the device at install, referenced from env as
    /// `${secrets.NAME}`.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretSpec>,
    pub services: Vec<Service>,
}

/// The web page of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebEntry {
    pub service: String,
    pub port: u16,
    /// Whether the app has its own login (the dashboard warns when an app
    /// without one is made public).
    #[serde(default = "yes")]
    pub has_login: bool,
}

fn yes() -> bool {
    true
}

/// A secret to generate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// Characters (alphanumeric).
    #[serde(default = "default_secret_length")]
    pub length: u16,
}

fn default_secret_length() -> u16 {
    32
}

/// One container of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// A DNS label; the app's other services reach it by this name.
    pub name: String,
    /// `registry/repository:tag`, optionally `@sha256:...`.
    pub image: String,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Ports the service listens on inside the app's network.
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
    #[serde(default)]
    pub health: Option<HealthCheck>,
    #[serde(default)]
    pub user: Option<String>,
    /// Capabilities beyond Docker's default set, from [`EXTRA_CAPABILITIES`]
    /// (a VPN needs `NET_ADMIN`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Ports opened on the device itself, the same number outside and in,
    /// for what is not HTTP (a VPN's UDP port, BitTorrent's peer port).
    #[serde(default)]
    pub expose: Vec<Exposed>,
}

/// Capabilities a manifest may add; anything that would let a container
/// take the device over (SYS_ADMIN, SYS_MODULE, ...) is not among them.
pub const EXTRA_CAPABILITIES: [&str; 3] = ["NET_ADMIN", "NET_RAW", "SYS_NICE"];

/// A port of the device forwarded to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exposed {
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

pub use ddaemon_runtime::network::Protocol;

/// A folder under `DATA/apps/<id>/` mounted into a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// The folder's name under the app's data folder.
    pub name: String,
    /// Where it appears in the container.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// Start after another service is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    pub service: String,
    /// `started` or `healthy` (its health check passes).
    #[serde(default = "default_condition")]
    pub condition: String,
}

fn default_condition() -> String {
    "healthy".into()
}

/// How to tell a service works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum HealthCheck {
    /// A TCP connection to this port succeeds.
    Tcp(u16),
    /// `GET path` on `port` answers below 500.
    Http { port: u16, path: String },
    /// A command run in the container exits 0.
    Command(Vec<String>),
}

/// One problem with a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: `services[0].image`.
    pub field: String,
    /// What is wrong and the fix.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a manifest was refused: every problem found, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ManifestError {
    pub problems: Vec<Problem>,
}

/// Parses and validates `app.toml` text.
pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| ManifestError {
        problems: vec![Problem {
            field: e
                .span()
                .map(|span| {
                    format!(
                        "line {}",
                        text[..span.start.min(text.len())].lines().count().max(1)
                    )
                })
                .unwrap_or_else(|| "app.toml".into()),
            message: e.message().to_owned(),
        }],
    })?;
    let problems = validate(&manifest);
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(ManifestError { problems })
    }
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Checks everything `serde` cannot: names, references between fields,
/// image references, paths.
pub fn validate(m: &Manifest) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut bad = |field: String, message: String| problems.push(Problem { field, message });
    if m.schema_version != SCHEMA_VERSION {
        bad(
            "schema_version".into(),
            format!(
                "is {}, this ddaemon reads version {SCHEMA_VERSION}; update ddaemon or the manifest",
                m.schema_version
            ),
        );
    }
    if !is_label(&m.id) {
        bad(
            "id".into(),
            "use lower-case letters, digits and hyphens (it becomes ID.local)".into(),
        );
    }
    for (field, value) in [
        ("title", &m.title),
        ("description", &m.description),
        ("version", &m.version),
    ] {
        if value.trim().is_empty() {
            bad(field.into(), "must not be empty".into());
        }
    }
    if !CATEGORIES.contains(&m.category.as_str()) {
        bad(
            "category".into(),
            format!(
                "{:?} is not a category; use one of {}",
                m.category,
                CATEGORIES.join(", ")
            ),
        );
    }
    if !m.icon.ends_with(".svg") || m.icon.contains('/') {
        bad(
            "icon".into(),
            "name an SVG file beside app.toml, e.g. \"icon.svg\"".into(),
        );
    }
    // Empty means unknown (an imported Compose file has no project page).
    if !m.upstream.is_empty() && !m.upstream.starts_with("https://") {
        bad(
            "upstream".into(),
            "give the project's https:// address, or leave it empty".into(),
        );
    }
    if m.start_timeout_secs
        .is_some_and(|t| !(5..=3600).contains(&t))
    {
        bad(
            "start_timeout_secs".into(),
            "give 5 to 3600 seconds, or leave it out for 300".into(),
        );
    }
    if m.architectures.is_empty() {
        bad(
            "architectures".into(),
            format!("list at least one of {}", ARCHITECTURES.join(", ")),
        );
    }
    for (i, arch) in m.architectures.iter().enumerate() {
        if !ARCHITECTURES.contains(&arch.as_str()) {
            bad(
                format!("architectures[{i}]"),
                format!("{arch:?} is not one of {}", ARCHITECTURES.join(", ")),
            );
        }
    }
    for (name, secret) in &m.secrets {
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            || name.is_empty()
        {
            bad(
                format!("secrets.{name}"),
                "use lower-case letters, digits and _".into(),
            );
        }
        if !(16..=128).contains(&secret.length) {
            bad(
                format!("secrets.{name}.length"),
                "use 16 to 128 characters".into(),
            );
        }
    }
    if m.services.is_empty() {
        bad(
            "services".into(),
            "an app needs at least one service".into(),
        );
    }
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    for (i, s) in m.services.iter().enumerate() {
        let at = |f: &str| format!("services[{i}].{f}");
        if !is_label(&s.name) {
            bad(
                at("name"),
                "use lower-case letters, digits and hyphens".into(),
            );
        }
        if names.iter().filter(|n| **n == s.name).count() > 1 {
            bad(
                at("name"),
                format!(
                    "{:?} is used by two services; give each its own name",
                    s.name
                ),
            );
        }
        match ddaemon_runtime::image_ref::ImageRef::parse(&s.image) {
            Ok(r) if r.tag() == Some("latest") && r.digest().is_none() => bad(
                at("image"),
                "pin a version tag (and a digest where possible) instead of latest, so updates are deliberate".into(),
            ),
            Ok(_) => {}
            Err(e) => bad(at("image"), e.to_string()),
        }
        for (key, value) in &s.env {
            if key.is_empty() || key.contains('=') {
                bad(
                    at(&format!("env.{key}")),
                    "an environment name must be non-empty and without '='".into(),
                );
            }
            let mut rest = value.as_str();
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    bad(at(&format!("env.{key}")), "an unclosed ${...}".into());
                    break;
                };
                let reference = &after[..end];
                match reference.strip_prefix("secrets.") {
                    Some(secret) if m.secrets.contains_key(secret) => {}
                    Some(secret) => bad(
                        at(&format!("env.{key}")),
                        format!("refers to secret {secret:?}, which [secrets] does not declare"),
                    ),
                    None => bad(
                        at(&format!("env.{key}")),
                        format!(
                            "${{{reference}}} is not known; only ${{secrets.NAME}} is replaced"
                        ),
                    ),
                }
                rest = &after[end + 1..];
            }
        }
        for (j, v) in s.volumes.iter().enumerate() {
            if !is_label(&v.name) {
                bad(
                    at(&format!("volumes[{j}].name")),
                    "use lower-case letters, digits and hyphens".into(),
                );
            }
            if !v.path.starts_with('/') || v.path.split('/').any(|p| p == "..") || v.path == "/" {
                bad(
                    at(&format!("volumes[{j}].path")),
                    "use an absolute path inside the container, not / and without ..".into(),
                );
            }
        }
        for (j, d) in s.depends_on.iter().enumerate() {
            if !names.contains(&d.service.as_str()) || d.service == s.name {
                bad(
                    at(&format!("depends_on[{j}].service")),
                    format!("{:?} is not another service of this app", d.service),
                );
            }
            if d.condition != "started" && d.condition != "healthy" {
                bad(
                    at(&format!("depends_on[{j}].condition")),
                    "use \"started\" or \"healthy\"".into(),
                );
            }
            if d.condition == "healthy"
                && m.services
                    .iter()
                    .find(|o| o.name == d.service)
                    .is_some_and(|o| o.health.is_none())
            {
                bad(
                    at(&format!("depends_on[{j}].condition")),
                    format!(
                        "{:?} has no health check; give it one or wait for \"started\"",
                        d.service
                    ),
                );
            }
        }
        for (j, cap) in s.capabilities.iter().enumerate() {
            if !EXTRA_CAPABILITIES.contains(&cap.as_str()) {
                bad(
                    at(&format!("capabilities[{j}]")),
                    format!(
                        "{cap:?} cannot be granted to an app; use one of {}",
                        EXTRA_CAPABILITIES.join(", ")
                    ),
                );
            }
        }
        for (j, e) in s.expose.iter().enumerate() {
            if e.port < 1024 && e.port != 53 {
                bad(
                    at(&format!("expose[{j}].port")),
                    "ports below 1024 belong to the device (80 and 443 are its proxy); use 1024 or above".into(),
                );
            }
        }
        if let Some(HealthCheck::Command(cmd)) = &s.health
            && cmd.is_empty()
        {
            bad(at("health.command"), "give the command to run".into());
        }
    }
    match m.services.iter().position(|s| s.name == m.web.service) {
        None => bad(
            "web.service".into(),
            format!("{:?} is not one of the services", m.web.service),
        ),
        Some(i) if !m.services[i].ports.contains(&m.web.port) => bad(
            "web.port".into(),
            format!(
                "service {:?} does not list port {} in its ports",
                m.web.service, m.web.port
            ),
        ),
        Some(_) => {}
    }
    if has_dependency_cycle(m) {
        bad(
            "services".into(),
            "depends_on forms a cycle; no service could start first".into(),
        );
    }
    problems
}

fn has_dependency_cycle(m: &Manifest) -> bool {
    // Kahn's algorithm: what cannot be ordered is in a cycle.
    let mut remaining: Vec<&Service> = m.services.iter().collect();
    let mut started: Vec<&str> = Vec::new();
    loop {
        let before = remaining.len();
        remaining.retain(|s| {
            let ready = s.depends_on.iter().all(|d| {
                started.contains(&d.service.as_str())
                    || !m.services.iter().any(|o| o.name == d.service)
            });
            if ready {
                started.push(&s.name);
            }
            !ready
        });
        if remaining.is_empty() {
            return false;
        }
        if remaining.len() == before {
            return true;
        }
    }
}

/// A manifest's required header fields followed by `rest` (TOML), for
/// the apps module's unit tests.
#[cfg(test)]
pub(crate) fn test_manifest(rest: &str) -> Manifest {
    let head = "schema_version = 1\nid = \"x\"\ntitle = \"X\"\ndescription = \"x\"\n\
                category = \"tools\"\nicon = \"icon.svg\"\nversion = \"1\"\nupstream = \"\"\n\
                architectures = [\"amd64\"]\n";
    toml::from_str(&format!("{head}{rest}")).expect("test manifest")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
schema_version = 1
id = "ghost"
title = "Ghost"
description = "Publishing"
category = "publishing"
icon = "icon.svg"
version = "5.96"
upstream = "https://ghost.org"
architectures = ["amd64", "arm64"]

[web]
service = "ghost"
port = 2368

[secrets]
db_password = { length = 32 }

[[services]]
name = "ghost"
image = "docker.io/library/ghost:5.96"
ports = [2368]
env = { database__connection__password = "${secrets.db_password}" }
volumes = [{ name = "content", path = "/var/lib/ghost/content" }]
depends_on = [{ service = "db" }]

[[services]]
name = "db"
image = "docker.io/library/mysql:8.0"
ports = [3306]
health = { tcp = 3306 }
"#;

    #[test]
    fn a_good_manifest_parses() {
        let m = parse(GOOD).expect("valid");
        assert_eq!(m.services.len(), 2);
        assert_eq!(m.services[1].health, Some(HealthCheck::Tcp(3306)));
        assert!(m.web.has_login);
    }

    #[test]
    fn problems_name_their_field() {
        let bad = GOOD
            .replace("\"${secrets.db_password}\"", "\"${secrets.nope}\"")
            .replace("docker.io/library/mysql:8.0", "mysql")
            .replace("category = \"publishing\"", "category = \"blogs\"")
            .replace("port = 2368", "port = 80")
            .replace("/var/lib/ghost/content", "content");
        let err = parse(&bad).expect_err("invalid");
        let fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
        for expected in [
            "category",
            "services[0].env.database__connection__password",
            "services[0].volumes[0].path",
            "services[1].image",
            "web.port",
        ] {
            assert!(
                fields.contains(&expected),
                "{expected} missing from {fields:?}"
            );
        }
        assert!(err.to_string().contains("pin a version"), "{err}");
    }

    #[test]
    fn unknown_keys_and_cycles_are_refused() {
        let err = parse(&GOOD.replace(
            "icon = \"icon.svg\"",
            "icon = \"icon.svg\"\ncolour = \"red\"",
        ))
        .expect_err("unknown key");
        assert!(err.to_string().contains("colour"), "{err}");
        let cyclic = GOOD.replace(
            "health = { tcp = 3306 }",
            "health = { tcp = 3306 }\ndepends_on = [{ service = \"ghost\", condition = \"started\" }]",
        );
        let err = parse(&cyclic).expect_err("cycle");
        assert!(err.to_string().contains("cycle"), "{err}");
    }
}
