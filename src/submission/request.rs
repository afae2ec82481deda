//! What the submitting program asked for, and the checks on it made before the message is read:
//! the DSN options and the envelope sender.

use crate::address::{Address, Domain, ReversePath};

use super::SubmissionError;

/// What the submitting program asked for (sendmail's argv, already parsed).
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `-f`/`-r`: the envelope sender; the invoking user when absent.
    pub sender: Option<String>,
    /// `-F`: the full name for a `From:` header we add.
    pub full_name: Option<String>,
    /// Recipients named as arguments.
    pub recipients: Vec<String>,
    /// `-t`: also take recipients from `To:`, `Cc:` and `Bcc:`.
    pub recipients_from_headers: bool,
    /// False with `-i`/`-oi`: a line holding a lone `.` no longer ends the input.
    pub dot_ends_input: bool,
    /// `-N`: DSN NOTIFY.
    pub notify: Option<String>,
    /// `-R`: DSN RET.
    pub ret: Option<String>,
    /// `-V`: DSN ENVID.
    pub envid: Option<String>,
}

pub(super) fn validate_dsn(request: &Request) -> Result<(), SubmissionError> {
    if let Some(notify) = &request.notify {
        let words: Vec<String> = notify
            .split(',')
            .map(|w| w.trim().to_ascii_lowercase())
            .collect();
        let valid = words == ["never"]
            || words
                .iter()
                .all(|w| matches!(w.as_str(), "success" | "failure" | "delay"));
        if !valid {
            return Err(SubmissionError::BadOption(format!(
                "-N {notify:?}: expected never, or a list of success, failure, delay"
            )));
        }
    }
    if let Some(ret) = &request.ret
        && !ret.eq_ignore_ascii_case("full")
        && !ret.eq_ignore_ascii_case("hdrs")
    {
        return Err(SubmissionError::BadOption(format!(
            "-R {ret:?}: expected full or hdrs"
        )));
    }
    if let Some(envid) = &request.envid
        && (envid.len() > 100 || !envid.bytes().all(|b| (b'!'..=b'~').contains(&b)))
    {
        return Err(SubmissionError::BadOption(format!(
            "-V {envid:?}: at most 100 printable characters without spaces"
        )));
    }
    Ok(())
}

pub(super) fn envelope_sender(
    request: &Request,
    here: &Domain,
) -> Result<ReversePath, SubmissionError> {
    if let Some(raw) = &request.sender {
        return ReversePath::parse(raw, here).map_err(SubmissionError::BadSender);
    }
    let uid = nix::unistd::Uid::from_raw(crate::queue::invoking_uid());
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|user| user.name)
        .or_else(|| std::env::var("LOGNAME").ok())
        .or_else(|| std::env::var("USER").ok())
        .ok_or(SubmissionError::UnknownUser(uid.as_raw()))?;
    Address::parse(&name, here)
        .map(ReversePath::Mailbox)
        .map_err(SubmissionError::BadSender)
}
