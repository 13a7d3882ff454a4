//! The kernel command line (`/proc/cmdline`): splitting it into
//! parameters, what `root=` names, and which root slot (A or B) booted.
//! Reading the file and acting on the answers is `boot`'s business.

/// The parameters, split on whitespace outside double quotes, quotes
/// removed, as the kernel does. Words after `--` belong to init and are
/// not kernel parameters, so they are left out.
pub fn params(cmdline: &str) -> Vec<String> {
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    params.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        params.push(current);
    }
    match params.iter().position(|p| p == "--") {
        Some(end) => params.into_iter().take(end).collect(),
        None => params,
    }
}

/// The value of `key=` (the last one wins, as in the kernel).
pub fn value(cmdline: &str, key: &str) -> Option<String> {
    params(cmdline)
        .into_iter()
        .filter_map(|p| {
            p.split_once('=')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.to_owned())
        })
        .next_back()
}

/// What `root=` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// `root=PARTLABEL=root-a`: a GPT partition name.
    PartLabel(String),
    /// `root=PARTUUID=…`: a GPT partition GUID or an MBR `disk id-NN`.
    PartUuid(String),
    /// `root=/dev/sda2`: a device node.
    Device(String),
    /// Anything else (`UUID=`, `LABEL=`, `major:minor`): not used to
    /// find the disk; the mount table is asked instead.
    Other(String),
}

/// Parses `root=` from the command line.
pub fn root(cmdline: &str) -> Option<RootSpec> {
    let value = value(cmdline, "root")?;
    Some(if let Some(label) = value.strip_prefix("PARTLABEL=") {
        RootSpec::PartLabel(label.to_owned())
    } else if let Some(uuid) = value.strip_prefix("PARTUUID=") {
        RootSpec::PartUuid(uuid.to_owned())
    } else if value.starts_with("/dev/") {
        RootSpec::Device(value)
    } else {
        RootSpec::Other(value)
    })
}

/// One of the two root partitions an update alternates between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// What `/run/ddaemon/boot-slot` holds: `a` or `b`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }

    /// The slot a partition name stands for: `root-a` or `root-b`.
    pub fn from_partition_name(name: &str) -> Option<Self> {
        match name {
            "root-a" => Some(Self::A),
            "root-b" => Some(Self::B),
            _ => None,
        }
    }
}

/// The slot `root=PARTLABEL=root-a` (or `root-b`) booted.
pub fn slot(cmdline: &str) -> Option<Slot> {
    match root(cmdline)? {
        RootSpec::PartLabel(label) => Slot::from_partition_name(&label),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const X86: &str = "BOOT_IMAGE=/vmlinuz root=PARTLABEL=root-a rootfstype=erofs ro \
                       init=/sbin/ddaemon-init console=tty0 console=ttyS0,115200 quiet\n";

    #[test]
    fn splits_on_whitespace_and_honours_quotes() {
        assert_eq!(
            params("a=1  b=\"two words\"\t\"c=x y\" d\n"),
            ["a=1", "b=two words", "c=x y", "d"]
        );
        assert!(params("").is_empty());
        assert!(params(" \n").is_empty());
    }

    #[test]
    fn words_after_a_double_dash_belong_to_init() {
        assert_eq!(params("quiet -- root=PARTLABEL=root-b"), ["quiet"]);
        assert_eq!(
            slot("root=PARTLABEL=root-a -- root=PARTLABEL=root-b"),
            Some(Slot::A)
        );
    }

    #[test]
    fn the_last_value_wins() {
        assert_eq!(
            value("console=tty0 console=ttyS0,115200", "console").as_deref(),
            Some("ttyS0,115200")
        );
        assert_eq!(value("quiet", "console"), None);
        // A key is matched whole, not as a prefix.
        assert_eq!(value("rootfstype=erofs", "root"), None);
    }

    #[test]
    fn root_specs() {
        assert_eq!(root(X86), Some(RootSpec::PartLabel("root-a".into())));
        assert_eq!(
            root("root=PARTUUID=dd000001-02 rootwait"),
            Some(RootSpec::PartUuid("dd000001-02".into()))
        );
        assert_eq!(
            root("root=/dev/mmcblk0p2"),
            Some(RootSpec::Device("/dev/mmcblk0p2".into()))
        );
        assert_eq!(
            root("root=UUID=1234"),
            Some(RootSpec::Other("UUID=1234".into()))
        );
        assert_eq!(root("quiet"), None);
    }

    #[test]
    fn the_slot_comes_from_the_root_partition_label() {
        assert_eq!(slot(X86), Some(Slot::A));
        assert_eq!(slot("root=PARTLABEL=root-b ro"), Some(Slot::B));
        assert_eq!(slot("root=\"PARTLABEL=root-b\""), Some(Slot::B));
        assert_eq!(
            slot("root=PARTLABEL=root-a root=PARTLABEL=root-b"),
            Some(Slot::B)
        );
        assert_eq!(slot("root=PARTLABEL=root-c"), None);
        assert_eq!(slot("root=PARTLABEL=ROOT-A"), None);
        assert_eq!(slot("root=/dev/sda2"), None);
        assert_eq!(slot(""), None);
        assert_eq!(Slot::A.as_str(), "a");
        assert_eq!(Slot::B.as_str(), "b");
    }
}
