//! The mail log: one line per event, to syslog's mail facility, stderr or a file.
//!
//! `log = "syslog"` (the default) writes to the local syslog socket when there is one and falls
//! back to stderr when there is none, so a machine without a syslog daemon still shows what
//! happened. File lines carry a timestamp and the program's name and pid, as syslog would add
//! them. Logging never stops delivery: a log file that cannot be opened gives one warning on
//! stderr and the lines go to stderr instead, and a log write that fails is dropped, since the
//! delivery state in the queue is the record that matters.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use crate::config::LogTarget;

enum Sink {
    Syslog(syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>),
    Stderr,
    File(File),
}

/// How much a line matters, as syslog ranks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Info,
    Warning,
}

/// A shared, thread-safe mail log.
pub struct MailLog {
    program: String,
    sink: Mutex<Sink>,
}

impl MailLog {
    /// Opens the configured log for `program`; stderr when the target cannot be opened.
    pub fn open(target: &LogTarget, program: &str) -> MailLog {
        let sink = match target {
            LogTarget::Syslog => {
                let formatter = syslog::Formatter3164 {
                    facility: syslog::Facility::LOG_MAIL,
                    hostname: None,
                    process: program.to_string(),
                    pid: std::process::id(),
                };
                syslog::unix(formatter).map_or(Sink::Stderr, Sink::Syslog)
            }
            LogTarget::Stderr => Sink::Stderr,
            LogTarget::File(path) => match OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)
            {
                Ok(file) => Sink::File(file),
                Err(e) => {
                    eprintln!(
                        "{program}: warning: cannot open the mail log {}: {e}; logging to stderr",
                        path.display()
                    );
                    Sink::Stderr
                }
            },
        };
        MailLog {
            program: program.to_string(),
            sink: Mutex::new(sink),
        }
    }

    pub fn info(&self, line: &str) {
        self.write(Severity::Info, line);
    }

    pub fn warning(&self, line: &str) {
        self.write(Severity::Warning, line);
    }

    fn write(&self, severity: Severity, line: &str) {
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        let prefix = match severity {
            Severity::Info => "",
            Severity::Warning => "warning: ",
        };
        match &mut *sink {
            Sink::Syslog(logger) => {
                let message = format!("{prefix}{line}");
                let _ = match severity {
                    Severity::Info => logger.info(message),
                    Severity::Warning => logger.warning(message),
                };
            }
            Sink::Stderr => {
                let text = format!("{}: {prefix}{line}\n", self.program);
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            }
            Sink::File(file) => {
                // One write(2) per line: with O_APPEND, lines from several runs sharing the file
                // stay whole; writeln! would issue a write per piece and interleave them.
                let stamp = chrono::Local::now().format("%b %e %H:%M:%S");
                let text = format!(
                    "{stamp} {}[{}]: {prefix}{line}\n",
                    self.program,
                    std::process::id()
                );
                let _ = file.write_all(text.as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_lines_carry_program_pid_and_severity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail.log");
        let log = MailLog::open(&LogTarget::File(path.clone()), "queue-run");
        log.info("ABC: to=<a@b.example>, status=sent");
        log.warning("XYZ: corrupt");
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let pid = std::process::id();
        assert!(lines[0].ends_with(&format!(
            "queue-run[{pid}]: ABC: to=<a@b.example>, status=sent"
        )));
        assert!(lines[1].ends_with("warning: XYZ: corrupt"));
    }

    #[test]
    fn a_log_file_that_cannot_be_opened_falls_back_to_stderr() {
        let dir = tempfile::tempdir().unwrap();
        for path in [
            dir.path().to_path_buf(),
            dir.path().join("missing/mail.log"),
        ] {
            let log = MailLog::open(&LogTarget::File(path), "queue-run");
            assert!(matches!(*log.sink.lock().unwrap(), Sink::Stderr));
            log.info("still logged");
        }
    }
}
