//! The catalog and Compose import: every catalog manifest validates, images
//! are pinned references, and real-world Compose files import.

mod common;

use std::path::Path;

use ddaemon::apps::{catalog, compose_import, manifest};
use ddaemon_runtime::image_ref::ImageRef;

/// Apps whose upstream publishes no arm64 build: each lists only the
/// architectures its image has (ActivityWatch releases x86_64 Linux builds
/// only).
const AMD64_ONLY: [&str; 1] = ["activitywatch"];

#[test]
fn every_catalog_app_is_valid_with_pinned_multi_arch_images() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
    let apps = catalog::load(&root).expect("the catalog loads");
    assert!(apps.len() >= 18, "{} apps", apps.len());
    let ids: Vec<&str> = apps.iter().map(|a| a.manifest.id.as_str()).collect();
    for wanted in [
        "jellyfin",
        "emby",
        "calibre-web",
        "wallabag",
        "audiobookshelf",
        "booksonic-air",
        "qbittorrent",
        "transmission",
        "synapse",
        "akkoma",
        "mastodon",
        "ghost",
        "lldap",
        "wg-easy",
        "activitywatch",
        "nextcloud",
        "vaultwarden",
        "syncthing",
    ] {
        assert!(ids.contains(&wanted), "{wanted} is in the catalog");
    }
    for app in &apps {
        let m = &app.manifest;
        let has = |arch: &str| m.architectures.iter().any(|a| a == arch);
        assert!(has("amd64"), "{}: amd64", m.id);
        assert_eq!(
            has("arm64"),
            !AMD64_ONLY.contains(&m.id.as_str()),
            "{}: arm64 unless its image has no arm64 build",
            m.id
        );
        for s in &m.services {
            let r = ImageRef::parse(&s.image).unwrap_or_else(|e| panic!("{}: {e}", m.id));
            assert!(
                r.tag().is_some_and(|t| t != "latest"),
                "{}: {} pins a tag",
                m.id,
                s.image
            );
        }
        assert!(app.icon_svg.contains("<svg"));
    }
    let app = |id: &str| {
        &apps
            .iter()
            .find(|a| a.manifest.id == id)
            .unwrap_or_else(|| panic!("{id}"))
            .manifest
    };
    assert_eq!(
        app("ghost").services.len(),
        2,
        "Ghost comes with its database"
    );
    for id in ["mastodon", "synapse", "ghost"] {
        assert!(app(id).services.len() > 1, "{id} has several services");
    }
    let wg = &app("wg-easy").services[0];
    assert!(wg.capabilities.iter().any(|c| c == "NET_ADMIN"), "{wg:?}");
    assert!(
        wg.expose
            .iter()
            .any(|e| e.port == 51820 && e.protocol == manifest::Protocol::Udp),
        "{wg:?}"
    );
}

#[test]
fn the_index_and_the_folders_must_agree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog/vaultwarden");
    std::fs::create_dir(dir.path().join("vaultwarden")).expect("dir");
    for f in ["app.toml", "icon.svg"] {
        std::fs::copy(src.join(f), dir.path().join("vaultwarden").join(f)).expect("copy");
    }
    std::fs::write(
        dir.path().join("index.toml"),
        "schema_version = 1\napps = [\"vaultwarden\", \"ghost\"]\n",
    )
    .expect("index");
    let err = catalog::load(dir.path()).expect_err("ghost has no folder");
    assert!(err.to_string().contains("keep them the same"), "{err}");
    std::fs::write(
        dir.path().join("index.toml"),
        "schema_version = 1\napps = [\"vaultwarden\"]\n",
    )
    .expect("index");
    assert_eq!(catalog::load(dir.path()).expect("loads").len(), 1);
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/compose")
            .join(name),
    )
    .expect("fixture")
}

#[test]
fn real_world_compose_files_import_to_valid_manifests() {
    for (file, id, services) in [
        ("vaultwarden.yml", "vaultwarden", 1),
        ("wallabag.yml", "wallabag", 3),
        ("jellyfin.yml", "jellyfin", 1),
        ("ghost.yml", "ghost", 2),
        ("wg-easy.yml", "wg-easy", 1),
        ("activitywatch.yml", "activitywatch", 1),
    ] {
        let imported =
            compose_import::import(&fixture(file), id).unwrap_or_else(|e| panic!("{file}: {e}"));
        let m = &imported.manifest;
        assert_eq!(m.services.len(), services, "{file}");
        assert!(manifest::validate(m).is_empty(), "{file}");
        // The manifest survives a round trip through TOML.
        let text = toml::to_string_pretty(m).expect("toml");
        assert_eq!(&manifest::parse(&text).expect("reparses"), m, "{file}");
    }
}

#[test]
fn imports_turn_variables_into_secrets_and_say_what_they_dropped() {
    let ghost = compose_import::import(&fixture("ghost.yml"), "ghost").expect("ghost");
    assert!(ghost.manifest.secrets.contains_key("db_root_password"));
    let env = &ghost.manifest.services[0].env;
    assert_eq!(
        env["database__connection__password"],
        "${secrets.db_root_password}"
    );
    assert_eq!(
        ghost.manifest.web.port, 2368,
        "the container's port, not the host's"
    );

    let wg = compose_import::import(&fixture("wg-easy.yml"), "wg-easy").expect("wg-easy");
    assert_eq!(
        wg.manifest.services[0].env["WG_HOST"], "vpn.example.com",
        "a variable with a default takes the default"
    );
    let notes = wg.notes.join("\n");
    assert!(
        notes.contains("cap_add") && notes.contains("sysctls"),
        "{notes}"
    );

    let jf = compose_import::import(&fixture("jellyfin.yml"), "jellyfin").expect("jellyfin");
    let notes = jf.notes.join("\n");
    assert!(
        notes.contains("network_mode")
            && notes.contains("long syntax")
            && notes.contains("extra_hosts"),
        "{notes}"
    );

    let aw = compose_import::import(&fixture("activitywatch.yml"), "activitywatch").expect("aw");
    assert!(
        aw.notes.iter().any(|n| n.starts_with("networks:")),
        "{:?}",
        aw.notes
    );
    assert_eq!(
        aw.manifest.services[0].command.as_deref(),
        Some(&["aw-server".to_owned(), "--host".into(), "0.0.0.0".into()][..])
    );

    let err =
        compose_import::import("services:\n  app:\n    build: .\n", "x").expect_err("no image");
    assert!(err.to_string().contains("image"), "{err}");
    let err = compose_import::import("services: [", "x").expect_err("bad yaml");
    assert!(err.to_string().contains("YAML"), "{err}");
}

#[test]
fn the_cli_imports_a_compose_file() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compose/ghost.yml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddaemon"))
        .args(["app", "import", "--id", "blog"])
        .arg(&file)
        .output()
        .expect("run ddaemon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = manifest::parse(&String::from_utf8_lossy(&out.stdout)).expect("a valid manifest");
    assert_eq!(m.id, "blog");
    assert_eq!(m.services[0].image, "docker.io/library/ghost:5.101");
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: architectures"));

    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_ddaemon"))
        .args(["app", "import", "--id", "Bad_Id"])
        .arg(&file)
        .output()
        .expect("run ddaemon");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("id: use lower-case"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[tokio::test]
async fn the_api_serves_the_catalog_and_its_icons_to_a_session() {
    let d = common::Daemon::start().await;
    let session = d.set_up().await;
    let r = d
        .http
        .get(d.url("/api/v1/catalog"))
        .send()
        .await
        .expect("catalog");
    assert_eq!(r.status(), 401, "the catalog needs a session");
    let entries: Vec<serde_json::Value> = d
        .get_as("/api/v1/catalog", &session.header())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(entries[0]["id"], "jellyfin", "the index's order");
    assert!(entries.len() >= 8);
    let ghost = entries.iter().find(|e| e["id"] == "ghost").expect("ghost");
    assert_eq!(ghost["services"], 2);
    let icon = d
        .get_as(ghost["icon"].as_str().expect("icon url"), &session.header())
        .await;
    assert_eq!(icon.headers()["content-type"], "image/svg+xml");
    assert!(icon.text().await.expect("svg").starts_with("<svg"));
    assert_eq!(
        d.get_as("/api/v1/catalog/nope/icon.svg", &session.header())
            .await
            .status(),
        404
    );
}
