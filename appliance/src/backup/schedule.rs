//! When backups run by themselves: daily at a time of day the owner picks,
//! in the device's time zone.

use serde::{Deserialize, Serialize};

use crate::field_error::FieldError;

/// The daily schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Off: backups run only when asked.
    #[serde(default = "on")]
    pub enabled: bool,
    /// `HH:MM`, 24-hour, in the device's time zone.
    #[serde(default = "three_am")]
    pub time: String,
}

fn on() -> bool {
    true
}

fn three_am() -> String {
    "03:00".into()
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            enabled: true,
            time: three_am(),
        }
    }
}

impl Schedule {
    fn hour_minute(&self) -> Option<(i8, i8)> {
        let (h, m) = self.time.split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
        ((0..24).contains(&h) && (0..60).contains(&m)).then_some((h, m))
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        self.hour_minute().map(drop).ok_or_else(|| {
            FieldError::new(
                "schedule.time",
                "must be a time of day as HH:MM, such as 03:00",
            )
        })
    }

    /// The next run after `now` (Unix seconds), in time zone `tz` (the
    /// system's when none or unknown); none when the schedule is off.
    pub fn next_after(&self, now: i64, tz: Option<&str>) -> Option<i64> {
        use rustic_core::jiff::{Timestamp, tz::TimeZone};
        if !self.enabled {
            return None;
        }
        let (h, m) = self.hour_minute()?;
        let tz = tz
            .and_then(|name| TimeZone::get(name).ok())
            .unwrap_or_else(TimeZone::system);
        let now = Timestamp::from_second(now).ok()?.to_zoned(tz.clone());
        let mut day = now.date();
        for _ in 0..2 {
            let at = day.at(h, m, 0, 0).to_zoned(tz.clone()).ok()?;
            if at.timestamp() > now.timestamp() {
                return Some(at.timestamp().as_second());
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

/// A week: how often the repository is checked.
const CHECK_EVERY: i64 = 7 * 86_400;

/// Runs the daily backup at its time, and after it a check when the last
/// one is a week old. New settings take effect at once.
pub fn start(backups: super::Backups, db: crate::state::StateDb) {
    let settings = backups.settings_changed();
    tokio::spawn(async move {
        if let Err(err) = backups.close_interrupted_runs().await {
            tracing::error!(%err, "cannot record interrupted backup runs");
        }
        loop {
            let now = super::now_unix();
            let timezone = db.device_settings().await.ok().and_then(|s| s.timezone);
            let wait = match backups.config().await {
                Ok(Some(config)) => config
                    .schedule
                    .next_after(now, timezone.as_deref())
                    .map(|at| at - now),
                _ => None,
            };
            let nap = wait.unwrap_or(600).clamp(1, 600);
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(nap.unsigned_abs())) => {}
                // New settings: the next run is computed again.
                () = settings.notified() => continue,
            }
            if wait.is_none_or(|w| w > nap) {
                continue;
            }
            tracing::info!("starting the scheduled backup");
            // A restore or check under way delays it rather than skipping
            // a day.
            backups.wait_idle().await;
            if let Err(err) = backups.start_backup().await {
                tracing::error!(%err, "the scheduled backup did not start");
                continue;
            }
            backups.wait_idle().await;
            let checked = backups.last_success("check").await.unwrap_or(0);
            if super::now_unix() - checked >= CHECK_EVERY {
                tracing::info!("starting the weekly check of the backups");
                if let Err(err) = backups.start_check().await {
                    tracing::error!(%err, "the weekly check did not start");
                }
                backups.wait_idle().await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_run_is_today_or_tomorrow_at_the_chosen_time() {
        let s = Schedule {
            enabled: true,
            time: "03:30".into(),
        };
        // 2026-11-27 02:00 UTC and 04:00 UTC.
        let two = 1_795_744_800;
        assert_eq!(s.next_after(two, Some("UTC")), Some(two + 5400));
        assert_eq!(
            s.next_after(two + 7200, Some("UTC")),
            Some(two + 5400 + 86_400)
        );
        // Berlin is UTC+1 in November: 03:30 there is 02:30 UTC.
        assert_eq!(s.next_after(two, Some("Europe/Berlin")), Some(two + 1800));
        let off = Schedule {
            enabled: false,
            ..s
        };
        assert_eq!(off.next_after(two, Some("UTC")), None);
    }

    #[test]
    fn a_bad_time_names_the_field() {
        for t in ["3:00", "24:00", "03:60", "noon"] {
            let s = Schedule {
                enabled: true,
                time: t.into(),
            };
            assert_eq!(s.validate().expect_err(t).field, "schedule.time");
        }
    }
}
