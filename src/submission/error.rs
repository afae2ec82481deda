//! Why a submission was refused, and the sysexits status each refusal exits with.

use std::io;

use crate::address::AddressError;
use crate::queue::QueueError;
use crate::sysexits::{Status, Sysexit};

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    #[error("no recipients: name them as arguments or use -t")]
    NoRecipients,
    #[error("no recipient addresses found in the To:, Cc: or Bcc: headers")]
    NoHeaderRecipients,
    #[error("bad recipient {0}")]
    BadRecipient(AddressError),
    #[error("bad sender {0}")]
    BadSender(AddressError),
    #[error("bad address in {header}: header: {source}")]
    BadHeaderAddress {
        header: &'static str,
        source: AddressError,
    },
    #[error("{0}")]
    BadOption(String),
    #[error("cannot determine the sender: no user name for uid {0}; use -f")]
    UnknownUser(u32),
    #[error("message exceeds the size limit of {limit} bytes")]
    TooBig { limit: u64 },
    #[error("the header section exceeds {limit} bytes")]
    HeaderTooBig { limit: usize },
    #[error(
        "the queue file system has {free} bytes free, less than queue_min_free ({reserve}); try again later"
    )]
    LowOnSpace { free: u64, reserve: u64 },
    #[error(
        "too many hops: the message already has {count} Received: headers (limit {limit}); a mail loop?"
    )]
    TooManyHops { count: usize, limit: u32 },
    #[error("cannot read the message: {0}")]
    Input(io::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Sysexit for SubmissionError {
    fn status(&self) -> Status {
        match self {
            SubmissionError::NoRecipients
            | SubmissionError::BadRecipient(_)
            | SubmissionError::BadSender(_)
            | SubmissionError::BadOption(_) => Status::Usage,
            SubmissionError::NoHeaderRecipients
            | SubmissionError::BadHeaderAddress { .. }
            | SubmissionError::TooBig { .. }
            | SubmissionError::HeaderTooBig { .. }
            | SubmissionError::TooManyHops { .. } => Status::DataErr,
            SubmissionError::LowOnSpace { .. } => Status::TempFail,
            SubmissionError::UnknownUser(_) => Status::NoUser,
            SubmissionError::Input(_) => Status::NoInput,
            SubmissionError::Queue(e) => e.status(),
        }
    }
}
