//! Lines on the console, each prefixed with `ddaemon-init: `.
//!
//! PID 1's stdout and stderr are the console. `eprintln!` panics when a
//! write fails, and a panic in PID 1 panics the kernel, so lines are
//! written here with their errors ignored. Nothing else is owned here.

/// Prints one line on the console: `log!("mounting {}", path)`.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::console::line(format_args!($($arg)*))
    };
}
pub(crate) use log;

/// Writes one prefixed line to stderr; a failed write is dropped.
pub fn line(args: std::fmt::Arguments<'_>) {
    #[cfg(not(test))]
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "ddaemon-init: {args}");
    }
    // The test harness captures only the print macros.
    #[cfg(test)]
    eprintln!("ddaemon-init: {args}");
}
