//! Turning a Compose file into an app manifest: the common subset
//! (services, image, environment, volumes, ports, depends_on, command,
//! restart), with a clear note for everything else.
//!
//! `${VAR}` references, which Compose files use for passwords, become
//! secrets generated on the device; `${VAR:-default}` takes the default.

use std::collections::BTreeMap;

use yaml_serde::Value;

use super::manifest::{self, Dependency, Manifest, SecretSpec, Service, Volume, WebEntry};

/// Keys of a service the import understands.
const SERVICE_KEYS: [&str; 8] = [
    "image",
    "environment",
    "volumes",
    "ports",
    "depends_on",
    "command",
    "restart",
    "user",
];

/// A manifest made from a Compose file, and what did not carry over.
#[derive(Debug, Clone)]
pub struct Imported {
    pub manifest: Manifest,
    /// One line per key or value left out, saying why.
    pub notes: Vec<String>,
}

/// Why a Compose file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the file is not valid YAML: {0}")]
    Yaml(String),
    #[error("{0}")]
    Shape(String),
    #[error("the imported manifest is not valid: {0}")]
    Invalid(#[from] manifest::ManifestError),
}

fn shape(message: impl Into<String>) -> ImportError {
    ImportError::Shape(message.into())
}

fn as_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Imports Compose YAML as app `id`.
pub fn import(yaml: &str, id: &str) -> Result<Imported, ImportError> {
    let doc: Value = yaml_serde::from_str(yaml).map_err(|e| ImportError::Yaml(e.to_string()))?;
    let top = doc
        .as_mapping()
        .ok_or_else(|| shape("the file is not a mapping of keys"))?;
    let mut notes = Vec::new();
    for (key, _) in top {
        match key.as_str().unwrap_or_default() {
            "services" | "volumes" | "version" | "name" => {}
            other => notes.push(format!("{other}: not supported (ddaemon gives each app its own network and data folder); left out")),
        }
    }
    let services = top
        .get("services")
        .and_then(Value::as_mapping)
        .ok_or_else(|| shape("services: missing; a Compose file needs a services mapping"))?;
    let mut secrets = BTreeMap::new();
    let mut out = Vec::new();
    let mut web: Option<(String, u16)> = None;
    for (name, body) in services {
        let name = name
            .as_str()
            .ok_or_else(|| shape("services: a service name is not a string"))?
            .to_owned();
        let body = body
            .as_mapping()
            .ok_or_else(|| shape(format!("services.{name}: not a mapping")))?;
        for (key, _) in body {
            let key = key.as_str().unwrap_or_default();
            if !SERVICE_KEYS.contains(&key) {
                let why = match key {
                    "build" => {
                        "ddaemon runs published images; build it and push it to a registry, then give `image`"
                    }
                    "networks" | "network_mode" => {
                        "each app gets its own network, where services reach each other by name"
                    }
                    "container_name" => "ddaemon names containers itself",
                    "healthcheck" => "write a health check in the manifest (tcp, http or command)",
                    "privileged" | "cap_add" | "devices" => {
                        "ddaemon does not grant extra privileges from an import; add them by hand if the app truly needs them"
                    }
                    _ => "not supported",
                };
                notes.push(format!("services.{name}.{key}: {why}; left out"));
            }
        }
        let image = body.get("image").and_then(as_str).ok_or_else(|| {
            shape(format!(
                "services.{name}.image: missing; ddaemon runs published images only"
            ))
        })?;
        // Written out in full, so the manifest says which registry it trusts.
        let image = ddaemon_runtime::image_ref::ImageRef::parse(&image)
            .map(|r| r.to_string())
            .unwrap_or(image);
        let mut env = BTreeMap::new();
        match body.get("environment") {
            Some(Value::Mapping(map)) => {
                for (k, v) in map {
                    if let Some(k) = k.as_str() {
                        env.insert(k.to_owned(), as_str(v).unwrap_or_default());
                    }
                }
            }
            Some(Value::Sequence(list)) => {
                for item in list.iter().filter_map(as_str) {
                    let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                    env.insert(k.to_owned(), v.to_owned());
                }
            }
            _ => {}
        }
        for value in env.values_mut() {
            *value = interpolate(value, &mut secrets);
        }
        let mut volumes = Vec::new();
        if let Some(list) = body.get("volumes").and_then(Value::as_sequence) {
            for item in list {
                let Some(text) = as_str(item) else {
                    notes.push(format!("services.{name}.volumes: the long syntax is not supported; use SOURCE:TARGET[:ro]"));
                    continue;
                };
                let parts: Vec<&str> = text.split(':').collect();
                let (source, target, ro) = match parts.as_slice() {
                    [s, t] => (*s, *t, false),
                    [s, t, mode] => (*s, *t, mode.contains("ro")),
                    _ => {
                        notes.push(format!(
                            "services.{name}.volumes: {text:?} has no target; left out"
                        ));
                        continue;
                    }
                };
                if source.starts_with("/var/run/docker.sock")
                    || source == "/"
                    || source.starts_with("/etc")
                {
                    notes.push(format!("services.{name}.volumes: {source} is a host path ddaemon does not share with apps; left out"));
                    continue;
                }
                volumes.push(Volume {
                    name: volume_name(source),
                    path: target.to_owned(),
                    read_only: ro,
                });
            }
        }
        let mut ports = Vec::new();
        if let Some(list) = body.get("ports").and_then(Value::as_sequence) {
            for item in list.iter().filter_map(as_str) {
                let container = item.rsplit(':').next().unwrap_or_default();
                let container = container.split('/').next().unwrap_or_default();
                match container.parse::<u16>() {
                    Ok(port) => {
                        ports.push(port);
                        if web.is_none() {
                            web = Some((name.clone(), port));
                        }
                    }
                    Err(_) => notes.push(format!(
                        "services.{name}.ports: {item:?} is not HOST:CONTAINER; left out"
                    )),
                }
            }
        }
        let depends_on = match body.get("depends_on") {
            Some(Value::Sequence(list)) => list
                .iter()
                .filter_map(as_str)
                .map(|service| Dependency {
                    service,
                    condition: "started".into(),
                })
                .collect(),
            Some(Value::Mapping(map)) => map
                .iter()
                .filter_map(|(k, v)| {
                    let condition = v.get("condition").and_then(as_str).unwrap_or_default();
                    Some(Dependency {
                        service: k.as_str()?.to_owned(),
                        condition: if condition == "service_healthy" {
                            "healthy"
                        } else {
                            "started"
                        }
                        .into(),
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        let command = match body.get("command") {
            Some(Value::Sequence(list)) => Some(list.iter().filter_map(as_str).collect()),
            Some(v) => as_str(v).map(|s| s.split_whitespace().map(str::to_owned).collect()),
            None => None,
        };
        if let Some(restart) = body.get("restart").and_then(as_str)
            && restart != "unless-stopped"
            && restart != "always"
        {
            notes.push(format!("services.{name}.restart: {restart:?} becomes ddaemon's own policy (apps restart unless stopped)"));
        }
        out.push(Service {
            name,
            image,
            command,
            env,
            volumes,
            ports,
            depends_on,
            health: None,
            user: body.get("user").and_then(as_str),
            capabilities: Vec::new(),
            expose: Vec::new(),
        });
    }
    // A dependency on a service without a health check waits for it to start.
    let healthless: Vec<String> = out
        .iter()
        .filter(|s| s.health.is_none())
        .map(|s| s.name.clone())
        .collect();
    for service in &mut out {
        for dep in &mut service.depends_on {
            if dep.condition == "healthy" && healthless.contains(&dep.service) {
                notes.push(format!(
                    "services.{}.depends_on.{}: waits until it starts (add a health check to wait until it is healthy)",
                    service.name, dep.service
                ));
                dep.condition = "started".into();
            }
        }
    }
    notes.push(
        "architectures: assumed amd64 and arm64; check that every image is built for both".into(),
    );
    let (web_service, web_port) = web.ok_or_else(|| {
        shape("ports: no service publishes a port; ddaemon needs the port of the app's web page")
    })?;
    let manifest = Manifest {
        schema_version: manifest::SCHEMA_VERSION,
        id: id.to_owned(),
        title: id.to_owned(),
        description: format!("Imported from a Compose file as {id}."),
        category: "tools".into(),
        icon: "icon.svg".into(),
        version: "imported".into(),
        upstream: String::new(),
        architectures: vec!["amd64".into(), "arm64".into()],
        min_memory_mib: None,
        start_timeout_secs: None,
        web: WebEntry {
            service: web_service,
            port: web_port,
            has_login: true,
        },
        secrets,
        services: out,
    };
    let problems = manifest::validate(&manifest);
    if !problems.is_empty() {
        return Err(manifest::ManifestError { problems }.into());
    }
    Ok(Imported { manifest, notes })
}

/// A volume's name under the app's data folder, from its Compose source.
fn volume_name(source: &str) -> String {
    let cleaned: String = source
        .trim_start_matches("./")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches('-').to_owned();
    if trimmed.is_empty() {
        "data".into()
    } else {
        trimmed.chars().take(63).collect()
    }
}

/// Replaces `${NAME}` with a generated secret and `${NAME:-x}` with `x`.
fn interpolate(value: &str, secrets: &mut BTreeMap<String, SecretSpec>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        if let Some((_, default)) = inner.split_once(":-") {
            out.push_str(default);
        } else {
            let name = inner.to_ascii_lowercase();
            secrets
                .entry(name.clone())
                .or_insert(SecretSpec { length: 32 });
            out.push_str(&format!("${{secrets.{name}}}"));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}
