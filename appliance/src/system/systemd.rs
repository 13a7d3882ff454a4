//! systemd's units, driven over D-Bus (`zbus`): the device's smbd and NFS
//! server are started, reloaded and stopped as shares come and go, and
//! the device restarts or powers off, without a `systemctl` process.
//!
//! A job is waited for as `systemctl` waits: its `JobRemoved` signal says
//! whether it was done or failed.

use std::time::Duration;

use futures_util::StreamExt as _;
use zbus::zvariant::OwnedObjectPath;

/// How long a unit's start or stop may take (smbd's own limit is 90 s).
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_or_restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

/// What to do with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitJob {
    Start,
    Stop,
    /// Reload if it runs (smbd re-reads its files), else start.
    ReloadOrRestart,
}

impl UnitJob {
    fn verb(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::ReloadOrRestart => "reload",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("systemd over D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("systemd could not {verb} {unit}: the job ended {result:?} (journalctl -u {unit})")]
    Failed {
        verb: &'static str,
        unit: String,
        result: String,
    },
    #[error("systemd did not {verb} {unit} within {JOB_TIMEOUT:?}")]
    TimedOut { verb: &'static str, unit: String },
}

async fn manager() -> Result<ManagerProxy<'static>, SystemdError> {
    let bus = zbus::Connection::system().await?;
    Ok(ManagerProxy::new(&bus).await?)
}

/// Runs `job` on `unit` and waits until systemd says it is done.
pub async fn run_unit_job(unit: &str, job: UnitJob) -> Result<(), SystemdError> {
    let manager = manager().await?;
    // Listening before the job is queued: a quick job's signal is not lost.
    let mut removed = manager.receive_job_removed().await?;
    manager.subscribe().await?;
    let path = match job {
        UnitJob::Start => manager.start_unit(unit, "replace").await?,
        UnitJob::Stop => manager.stop_unit(unit, "replace").await?,
        UnitJob::ReloadOrRestart => manager.reload_or_restart_unit(unit, "replace").await?,
    };
    let verb = job.verb();
    let result = tokio::time::timeout(JOB_TIMEOUT, async {
        while let Some(signal) = removed.next().await {
            let args = signal.args()?;
            if args.job == path {
                return Ok(args.result);
            }
        }
        Err(SystemdError::Bus(zbus::Error::Failure(
            "the bus closed before the job ended".into(),
        )))
    })
    .await
    .map_err(|_| SystemdError::TimedOut {
        verb,
        unit: unit.to_owned(),
    })??;
    tracing::debug!(%unit, verb, %result, "systemd job ended");
    if result == "done" {
        Ok(())
    } else {
        Err(SystemdError::Failed {
            verb,
            unit: unit.to_owned(),
            result,
        })
    }
}

/// Queues `target` (`reboot.target`, `poweroff.target`) for good and
/// returns at once: systemd then stops every service, this one included.
pub async fn queue_final_target(target: &str) -> Result<(), SystemdError> {
    manager()
        .await?
        .start_unit(target, "replace-irreversibly")
        .await?;
    Ok(())
}
