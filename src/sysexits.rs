//! Exit statuses from `sysexits.h`, and the one place where library errors become them.
//!
//! Every program ends through [`finish`]: success maps to its status, a failure prints exactly one
//! line on stderr (`program: what went wrong`) and exits with the status its error carries. Library
//! error types implement [`Sysexit`]; `anyhow` context added at the edges is kept in the message
//! while the innermost typed error decides the code.

use std::fmt;
use std::process::ExitCode;

/// The exit statuses of `sysexits.h` that etrnq uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    Usage = 64,
    DataErr = 65,
    NoInput = 66,
    NoUser = 67,
    NoHost = 68,
    Unavailable = 69,
    Software = 70,
    OsErr = 71,
    CantCreat = 73,
    IoErr = 74,
    TempFail = 75,
    Protocol = 76,
    NoPerm = 77,
    Config = 78,
}

impl Status {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The status that describes a failed system call: a full disk or quota is temporary (the
    /// sender should try again later), a refused permission is a permission problem, the rest is
    /// an I/O error.
    pub fn of_io(err: &std::io::Error) -> Status {
        match err.raw_os_error() {
            Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT) => Status::TempFail,
            Some(nix::libc::EACCES) | Some(nix::libc::EPERM) | Some(nix::libc::EROFS) => {
                Status::CantCreat
            }
            _ => Status::IoErr,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<Status> for ExitCode {
    fn from(status: Status) -> ExitCode {
        ExitCode::from(status.code())
    }
}

/// Implemented by every library error type: the exit status a program should end with when this
/// error stops it.
pub trait Sysexit: std::error::Error + Send + Sync + 'static {
    fn status(&self) -> Status;
}

/// An error raised directly at a program's edge, with the status chosen there.
#[derive(Debug)]
pub struct Failure {
    pub status: Status,
    pub message: String,
}

impl Failure {
    pub fn new(status: Status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl Sysexit for Failure {
    fn status(&self) -> Status {
        self.status
    }
}

/// The status an error chain asks for: the first typed error found from the outside in; an I/O
/// error with no typed wrapper is classified by its errno; anything else is a software error.
pub fn status_of(err: &anyhow::Error) -> Status {
    for cause in err.chain() {
        if let Some(status) = typed_status(cause) {
            return status;
        }
    }
    Status::Software
}

fn typed_status(cause: &(dyn std::error::Error + 'static)) -> Option<Status> {
    macro_rules! typed {
        ($($error:ty),* $(,)?) => {
            $(
                if let Some(e) = cause.downcast_ref::<$error>() {
                    return Some(e.status());
                }
            )*
        };
    }
    typed!(
        Failure,
        crate::config::ConfigError,
        crate::address::AddressError,
        crate::queue::QueueError,
        crate::submission::SubmissionError,
        crate::report::ReportError,
        crate::smtp::SmtpError,
        crate::smtpd::SmtpdError,
        crate::dns::DnsError,
    );
    cause.downcast_ref::<std::io::Error>().map(Status::of_io)
}

/// Ends a program: prints a failure as one line on stderr, prefixed with the program name, and
/// turns the outcome into the process exit code. A closed stdout (`mailq | head`) is not an error.
pub fn finish(program: &str, outcome: anyhow::Result<Status>) -> ExitCode {
    match outcome {
        Ok(status) => status.into(),
        Err(err) if is_broken_pipe(&err) => Status::Ok.into(),
        Err(err) => {
            report(program, &err);
            status_of(&err).into()
        }
    }
}

/// The exit status of a monitoring check that could not check (Nagios plugin convention).
pub const CHECK_UNKNOWN: u8 = 3;

/// Ends a monitoring check such as mx-check, whose callers (Nagios, Icinga) read 0 OK,
/// 1 WARNING, 2 CRITICAL and 3 UNKNOWN and take anything else for a broken plugin: success exits
/// with the check's state; a failure to check at all (usage, configuration, resolver set-up) is
/// reported like [`finish`] reports it and exits 3, whatever its sysexits status would be.
pub fn finish_check(program: &str, outcome: anyhow::Result<u8>) -> ExitCode {
    match outcome {
        Ok(state) => ExitCode::from(state),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(CHECK_UNKNOWN),
        Err(err) => {
            report(program, &err);
            ExitCode::from(CHECK_UNKNOWN)
        }
    }
}

fn report(program: &str, err: &anyhow::Error) {
    let message = format!("{err:#}").replace('\n', " ");
    eprintln!("{program}: {message}");
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn outermost_typed_error_decides_the_status() {
        let inner = std::io::Error::from_raw_os_error(nix::libc::ENOSPC);
        let err = anyhow::Error::new(inner).context("writing the message");
        assert_eq!(status_of(&err), Status::TempFail);

        let err = anyhow::Error::new(Failure::new(Status::Usage, "no recipients"))
            .context("queue-enqueue");
        assert_eq!(status_of(&err), Status::Usage);
    }

    #[test]
    fn untyped_errors_are_software_errors() {
        let err: anyhow::Result<()> = Err(anyhow::anyhow!("surprise"));
        let err = err.context("outer").unwrap_err();
        assert_eq!(status_of(&err), Status::Software);
    }
}
