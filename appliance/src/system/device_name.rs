//! Device names: what the owner types in setup, and `NAME.local` on the network.

use crate::field_error::FieldError;

/// The name a fresh device offers.
pub const DEFAULT_DEVICE_NAME: &str = "ddaemon";

/// Lower-cases and checks a device name: it must be a DNS label (RFC 1123),
/// because it becomes the host name and `NAME.local`.
pub fn normalize_device_name(input: &str) -> Result<String, FieldError> {
    const FIELD: &str = "device_name";
    let name = input.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err(FieldError::new(
            FIELD,
            format!("the device name is empty; type one, for example \"{DEFAULT_DEVICE_NAME}\""),
        ));
    }
    if name.len() > 63 {
        return Err(FieldError::new(
            FIELD,
            format!(
                "the device name has {} characters; use at most 63",
                name.len()
            ),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(FieldError::new(
            FIELD,
            format!(
                "the device name contains {bad:?}; use only letters a-z, digits and hyphens (it becomes NAME.local)"
            ),
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(FieldError::new(
            FIELD,
            "the device name starts or ends with a hyphen; move the hyphen inside the name",
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(FieldError::new(
            FIELD,
            "the device name is only digits, which looks like an address; add a letter",
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_labels_and_lowercases() {
        assert_eq!(normalize_device_name("ddaemon").as_deref(), Ok("ddaemon"));
        assert_eq!(
            normalize_device_name(" Living-Room2 ").as_deref(),
            Ok("living-room2")
        );
        assert_eq!(
            normalize_device_name(&"a".repeat(63)).map(|s| s.len()),
            Ok(63)
        );
    }

    #[test]
    fn refuses_what_is_not_a_dns_label() {
        for bad in [
            "",
            "   ",
            "-pi",
            "pi-",
            "my pi",
            "pi.local",
            "péché",
            "1234",
            &"a".repeat(64),
        ] {
            let err = normalize_device_name(bad).expect_err(bad);
            assert_eq!(err.field, "device_name", "{bad}");
        }
    }
}
