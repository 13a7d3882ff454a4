//! Running the system's tools (`ip`, `nft`): one helper that bounds the time,
//! captures the output, and names the command in its error.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// A tool that failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {command}: {source} (is it installed?)")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("{command} did not finish within {seconds} s")]
    Timeout { command: String, seconds: u64 },
}

/// Runs `program args`, feeding `stdin` if given; returns its stdout.
pub async fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<String, CommandError> {
    let command = format!("{program} {}", args.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|source| CommandError::Spawn {
                command: command.clone(),
                source,
            })?;
    }
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| CommandError::Timeout {
            command: command.clone(),
            seconds: timeout.as_secs(),
        })?
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(CommandError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_failure_and_timeout() {
        let t = Duration::from_secs(5);
        assert_eq!(
            run("sh", &["-c", "cat"], Some("hi"), t).await.expect("cat"),
            "hi"
        );
        let err = run("sh", &["-c", "echo nope >&2; exit 3"], None, t)
            .await
            .expect_err("fails");
        assert!(
            err.to_string().contains("sh -c") && err.to_string().contains("nope"),
            "{err}"
        );
        let err = run("sleep", &["5"], None, Duration::from_millis(100))
            .await
            .expect_err("slow");
        assert!(matches!(err, CommandError::Timeout { .. }));
        assert!(matches!(
            run("/nonexistent/tool", &[], None, t).await,
            Err(CommandError::Spawn { .. })
        ));
    }
}
