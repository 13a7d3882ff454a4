//! Running the external tools init needs (`sfdisk`, `partx`, `mkfs.ext4`,
//! `resize2fs`): one helper that feeds stdin, captures stdout and stderr,
//! enforces a time limit and turns a failure into an error naming the
//! command and what it printed. Which commands to run is `first_boot`'s
//! business, not this module's.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian keeps the tools. PID 1 may start with no `PATH` at all.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a command may take unless it says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A command to run: program, arguments, optional stdin, time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// Fed to the command's stdin; without it stdin is `/dev/null`, so
    /// a tool that asks a question fails instead of waiting on the console.
    pub stdin: Option<String>,
    pub timeout: Duration,
}

impl Cmd {
    /// A command with no arguments and the default time limit.
    pub fn new(program: &str) -> Self {
        Self {
            program: program.to_owned(),
            args: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets what the command reads on stdin.
    pub fn stdin(mut self, text: &str) -> Self {
        self.stdin = Some(text.to_owned());
        self
    }

    /// Sets the time limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Shown as a shell would run it: `echo ', +' | sfdisk -N 4 /dev/sda`.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(stdin) = &self.stdin {
            write!(f, "echo '{}' | ", stdin.trim_end())?;
        }
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{command}` could not be started: {source}")]
    Start {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` did not finish within {seconds} s and was killed")]
    TimedOut { command: String, seconds: u64 },
}

/// Runs a command to its end and returns its stdout.
pub fn run(cmd: &Cmd) -> Result<String, CommandError> {
    let command = cmd.to_string();
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .env("PATH", PATH)
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Start {
            command: command.clone(),
            source,
        })?;
    // Readers first, so a chatty command never blocks on a full pipe.
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    if let (Some(text), Some(mut pipe)) = (&cmd.stdin, child.stdin.take()) {
        // A command that stops reading early shows it in its own status.
        let _ = pipe.write_all(text.as_bytes());
    }
    let deadline = Instant::now() + cmd.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(CommandError::TimedOut {
                    command: command.clone(),
                    seconds: cmd.timeout.as_secs(),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(CommandError::Start {
                    command: command.clone(),
                    source,
                });
            }
        }
    };
    let stdout = collect(stdout);
    let stderr = collect(stderr);
    let status = status?;
    if status.success() {
        Ok(stdout)
    } else {
        let stderr = stderr.trim();
        Err(CommandError::Failed {
            command,
            status: status.to_string(),
            stderr: if stderr.is_empty() {
                "(nothing on stderr)".to_owned()
            } else {
                stderr.to_owned()
            },
        })
    }
}

fn read_in_background<R: Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

fn collect(reader: Option<std::thread::JoinHandle<Vec<u8>>>) -> String {
    reader
        .and_then(|handle| handle.join().ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_as_a_shell_line() {
        let cmd = Cmd::new("sfdisk")
            .args(["-N", "4", "/dev/sda"])
            .stdin(", +\n");
        assert_eq!(cmd.to_string(), "echo ', +' | sfdisk -N 4 /dev/sda");
    }

    #[test]
    fn returns_stdout_and_feeds_stdin() {
        let out = run(&Cmd::new("cat").stdin("hello\n"));
        assert_eq!(out.ok().as_deref(), Some("hello\n"));
    }

    #[test]
    fn stdin_is_empty_without_input() {
        let out = run(&Cmd::new("cat"));
        assert_eq!(out.ok().as_deref(), Some(""));
    }

    #[test]
    fn a_failure_names_the_command_and_its_stderr() {
        let err = run(&Cmd::new("sh").args(["-c", "echo broken >&2; exit 3"]));
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("`sh -c echo broken >&2; exit 3`"),
            "{message}"
        );
        assert!(message.contains("broken"), "{message}");
        assert!(message.contains('3'), "{message}");
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = run(&Cmd::new("ddaemon-no-such-tool"));
        assert!(matches!(err, Err(CommandError::Start { .. })), "{err:?}");
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("ddaemon-no-such-tool"), "{message}");
    }

    #[test]
    fn a_slow_command_is_killed_at_its_time_limit() {
        let started = Instant::now();
        let err = run(&Cmd::new("sleep")
            .args(["10"])
            .timeout(Duration::from_millis(200)));
        assert!(matches!(err, Err(CommandError::TimedOut { .. })), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
