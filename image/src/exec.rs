//! Running external tools with their output captured.
//!
//! Tools like `mksquashfs` and `grub-mkrescue` are chatty; the build shows a
//! spinner instead and prints a tool's output only when it fails, together
//! with the exact command line so the failure can be reproduced by hand.

use std::fmt::Write as _;
use std::process::{Command, ExitStatus, Output};

/// A tool that could not be started or exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("starting `{cmdline}`")]
    Spawn {
        cmdline: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmdline}` failed ({status}){output}")]
    Failed {
        cmdline: String,
        status: ExitStatus,
        /// stdout and stderr, indented, with a leading newline (empty when silent).
        output: String,
    },
}

/// Renders a command as a shell-like line for error messages.
pub fn cmdline(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            let _ = write!(
                line,
                "{}={} ",
                key.to_string_lossy(),
                value.to_string_lossy()
            );
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        line = format!("(cd {} && {line}", dir.display());
    }
    line.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '"', '\'', '$', '*']) {
            let _ = write!(line, " '{}'", arg.replace('\'', r"'\''"));
        } else {
            let _ = write!(line, " {arg}");
        }
    }
    if cmd.get_current_dir().is_some() {
        line.push(')');
    }
    line
}

/// Runs `cmd` to completion with stdin closed and output captured.
pub fn run(cmd: &mut Command) -> Result<Output, ExecError> {
    cmd.stdin(std::process::Stdio::null());
    let output = cmd.output().map_err(|source| ExecError::Spawn {
        cmdline: cmdline(cmd),
        source,
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::new();
    for stream in [&output.stdout, &output.stderr] {
        for line in String::from_utf8_lossy(stream).lines() {
            let _ = write!(text, "\n    {line}");
        }
    }
    Err(ExecError::Failed {
        cmdline: cmdline(cmd),
        status: output.status,
        output: text,
    })
}

/// Runs `cmd` and returns its stdout as text.
pub fn stdout(cmd: &mut Command) -> Result<String, ExecError> {
    run(cmd).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_command_and_output() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`sh -c 'echo boom >&2; exit 3'` failed"),
            "{msg}"
        );
        assert!(msg.contains("\n    boom"), "{msg}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run(&mut Command::new("/nonexistent/tool")).unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }));
    }
}
