//! Raspberry Pi Imager's `os_list` entry for a Pi image, so the image shows
//! up in Imager's list (`rpi-imager --repo FILE.json`) with its sizes and
//! checksums, and Imager verifies what it wrote.

use serde_json::{Value, json};

/// What Imager needs to know about one image.
#[derive(Debug, Clone)]
pub struct ImagerEntry<'a> {
    pub name: &'a str,
    pub description: &'a str,
    /// Where Imager downloads the compressed image from.
    pub url: &'a str,
    /// `YYYY-MM-DD`.
    pub release_date: &'a str,
    pub extract_size: u64,
    pub extract_sha256: &'a str,
    pub download_size: u64,
    pub download_sha256: &'a str,
    /// Imager's device tags (`pi4-64bit`).
    pub devices: &'a [String],
}

impl ImagerEntry<'_> {
    /// The whole repository file: one list with this image. No
    /// `init_format`: Imager's own customisation (user, Wi-Fi, SSH) would
    /// write files ddaemon does not read, so Imager is told not to offer it.
    pub fn os_list(&self) -> Value {
        json!({
            "os_list": [{
                "name": self.name,
                "description": self.description,
                "url": self.url,
                "release_date": self.release_date,
                "extract_size": self.extract_size,
                "extract_sha256": self.extract_sha256,
                "image_download_size": self.download_size,
                "image_download_sha256": self.download_sha256,
                "devices": self.devices,
            }]
        })
    }
}

/// `YYYY-MM-DD` of a Unix time (UTC).
pub fn date_of(seconds: u64) -> String {
    let at = i64::try_from(seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let d = at.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entry_has_what_imager_reads() {
        let devices = vec!["pi4-64bit".to_owned()];
        let e = ImagerEntry {
            name: "ddaemon",
            description: "home server",
            url: "https://example.test/ddaemon-rpi4-1.0.img.xz",
            release_date: &date_of(1_764_115_200),
            extract_size: 1_610_612_736,
            extract_sha256: "aa",
            download_size: 200_000_000,
            download_sha256: "bb",
            devices: &devices,
        };
        let v = e.os_list();
        let entry = &v["os_list"][0];
        assert_eq!(entry["release_date"], "2025-11-26");
        assert_eq!(entry["extract_size"], 1_610_612_736_u64);
        assert_eq!(entry["image_download_sha256"], "bb");
        assert_eq!(entry["devices"][0], "pi4-64bit");
        assert!(entry.get("init_format").is_none());
    }
}
