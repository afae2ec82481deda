//! Exit statuses from `sysexits.h`, and the trait by which a library error names its own.
//!
//! Library error types implement [`Sysexit`]; the edge (`cli::finish`) looks for the first typed
//! error in a failure's chain and exits with its status. This module depends on nothing else in
//! the crate, so every error module can use it without a cycle.

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
