//! Restarting and shutting down the device from the System page and API.
//!
//! Only a supervisor started with `--power-control` (the device's own
//! systemd unit) may do it: the same binary run on a developer's machine or
//! in the tests must never reboot its host.

use std::process::Stdio;

/// What the owner asked the device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PowerAction {
    Restart,
    PowerOff,
}

impl PowerAction {
    fn systemctl_verb(self) -> &'static str {
        match self {
            Self::Restart => "reboot",
            Self::PowerOff => "poweroff",
        }
    }
}

/// Why the device did not act.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error(
        "this supervisor does not control the machine it runs on (it was started without --power-control); restart or shut down the machine itself"
    )]
    NotAllowed,
    #[error("systemctl {verb} failed: {message}")]
    Systemctl { verb: &'static str, message: String },
}

/// Whether and how this supervisor restarts or shuts down its machine.
#[derive(Debug, Clone, Copy)]
pub struct Power {
    allowed: bool,
}

impl Power {
    /// `allowed`: the supervisor runs as the device's own service.
    pub fn new(allowed: bool) -> Self {
        Self { allowed }
    }

    pub fn allowed(self) -> bool {
        self.allowed
    }

    /// Queues the reboot or power-off with systemd and returns at once, so
    /// the answer still reaches the owner; systemd then stops every service
    /// (this one included) in order.
    pub async fn request(self, action: PowerAction) -> Result<(), PowerError> {
        if !self.allowed {
            return Err(PowerError::NotAllowed);
        }
        let verb = action.systemctl_verb();
        tracing::warn!(action = verb, "the owner asked the device to {verb}");
        let out = tokio::process::Command::new("systemctl")
            .args(["--no-block", verb])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| PowerError::Systemctl {
                verb,
                message: e.to_string(),
            })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(PowerError::Systemctl {
                verb,
                message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_supervisor_without_power_control_refuses() {
        let err = Power::new(false)
            .request(PowerAction::PowerOff)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("--power-control"), "{err}");
    }

    #[test]
    fn actions_read_as_the_api_writes_them() {
        let a: PowerAction = serde_json::from_str("\"power-off\"").expect("power-off");
        assert_eq!(a, PowerAction::PowerOff);
        let a: PowerAction = serde_json::from_str("\"restart\"").expect("restart");
        assert_eq!(a, PowerAction::Restart);
        assert!(serde_json::from_str::<PowerAction>("\"halt\"").is_err());
    }
}
