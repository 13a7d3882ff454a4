//! The app catalog: one folder per app (`app.toml`, `icon.svg`) under a
//! catalog root — `appliance/catalog/` in the source tree, installed beside
//! the binary on a device — and `index.toml`, the order and featured apps
//! the page shows.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::manifest::{self, Manifest, ManifestError};

/// `index.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub schema_version: u32,
    /// App ids, in the order the catalog shows them.
    pub apps: Vec<String>,
}

/// One app of the catalog.
#[derive(Debug, Clone)]
pub struct CatalogApp {
    pub manifest: Manifest,
    pub icon_svg: String,
}

/// Why the catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Index { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Manifest {
        path: PathBuf,
        source: ManifestError,
    },
    #[error("{path}: {message}")]
    Mismatch { path: PathBuf, message: String },
}

/// Reads the whole catalog at `root`, checking every manifest, its icon,
/// and that the index and the folders agree.
pub fn load(root: &Path) -> Result<Vec<CatalogApp>, CatalogError> {
    let index_path = root.join("index.toml");
    let text = std::fs::read_to_string(&index_path).map_err(|source| CatalogError::Io {
        path: index_path.clone(),
        source,
    })?;
    let index: Index = toml::from_str(&text).map_err(|e| CatalogError::Index {
        path: index_path.clone(),
        message: e.message().to_owned(),
    })?;
    let mut folders: Vec<String> = std::fs::read_dir(root)
        .map_err(|source| CatalogError::Io {
            path: root.to_owned(),
            source,
        })?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    folders.sort();
    let mut listed = index.apps.clone();
    listed.sort();
    if folders != listed {
        return Err(CatalogError::Mismatch {
            path: index_path,
            message: format!(
                "index.toml lists {listed:?} but the folders are {folders:?}; keep them the same"
            ),
        });
    }
    let mut apps = Vec::new();
    for id in &index.apps {
        let dir = root.join(id);
        let manifest_path = dir.join("app.toml");
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| CatalogError::Io {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest = manifest::parse(&text).map_err(|source| CatalogError::Manifest {
            path: manifest_path.clone(),
            source,
        })?;
        if &manifest.id != id {
            return Err(CatalogError::Mismatch {
                path: manifest_path,
                message: format!("id is {:?} but the folder is {id:?}", manifest.id),
            });
        }
        let icon_path = dir.join(&manifest.icon);
        let icon_svg = std::fs::read_to_string(&icon_path).map_err(|source| CatalogError::Io {
            path: icon_path.clone(),
            source,
        })?;
        if !icon_svg.trim_start().starts_with("<svg")
            || icon_svg.contains("<script")
            || icon_svg.contains("href=\"http")
        {
            return Err(CatalogError::Mismatch {
                path: icon_path,
                message: "the icon must be a self-contained SVG without scripts or outside links"
                    .into(),
            });
        }
        apps.push(CatalogApp { manifest, icon_svg });
    }
    Ok(apps)
}
