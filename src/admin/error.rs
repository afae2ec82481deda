//! What stops a whole request, as opposed to one message's trouble (which is a line and a count
//! in the summary).

use crate::queue::QueueError;
use crate::sysexits::{Status, Sysexit};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "nothing selected: name queue ids (or - to read them from standard input), -R, -S, -I, \
         --held, --older-than or --all"
    )]
    NothingSelected,
    #[error("{0}")]
    Queue(#[from] QueueError),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

impl Sysexit for AdminError {
    fn status(&self) -> Status {
        match self {
            AdminError::NothingSelected => Status::Usage,
            AdminError::Queue(e) => e.status(),
            AdminError::Output(e) => Status::of_io(e),
        }
    }
}
