//! Restarting and shutting down the device from the System page and API.
//!
//! Only a supervisor started with `--power-control` (the device's own
//! systemd unit) may do it: the same binary run on a developer's machine or
//! in the tests must never reboot its host.

/// What the owner asked the device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PowerAction {
    Restart,
    PowerOff,
}

impl PowerAction {
    fn target(self) -> &'static str {
        match self {
            Self::Restart => "reboot.target",
            Self::PowerOff => "poweroff.target",
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
    #[error(transparent)]
    Systemd(#[from] super::systemd::SystemdError),
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
        let target = action.target();
        tracing::warn!(%target, "the owner asked the device to go to {target}");
        Ok(super::systemd::queue_final_target(target).await?)
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
