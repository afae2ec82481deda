//! Delivery down a connection the run did not open: an ODMR session after ATRN (RFC 2645).
//!
//! The provider's ODMR server hands the run the connection its customer opened, greeted and
//! said EHLO to ([`Turnaround::new`]). While a run has one, every recipient it selects goes down
//! that connection, whatever routes, the smart host or MX records say, and nothing is looked up
//! or connected to. Everything else is the run as `queue-run -R` makes it: per-message locks
//! held across the conversation, a recipient some other run holds skipped and tried at the end,
//! per-recipient outcomes, retry and bounce rules.
//!
//! Promises: the connection is used by one delivery thread at a time, and given back after
//! every job that ended well, so the messages another run held go down it at the end too. Once
//! it has failed it is gone: what is left of the run is deferred (4.4.2) and stays queued for
//! the customer's next ATRN; nothing is sent anywhere else.

use std::sync::Mutex;

use crate::smtp::Connection;

use super::outcome::BAD_CONNECTION;
use super::targets::NoRoute;

/// The one connection a run delivers down, and where it is now.
pub struct Turnaround {
    connection: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for Turnaround {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Turnaround")
    }
}

impl Turnaround {
    /// A connection greeted and said hello to, ready for mail transactions.
    pub fn new(connection: Connection) -> Turnaround {
        Turnaround {
            connection: Mutex::new(Some(connection)),
        }
    }

    /// The connection, for one job; when it failed earlier in the run, why there is none.
    pub(super) fn take(&self) -> Result<(Connection, Option<String>), NoRoute> {
        let connection = self.connection.lock().ok().and_then(|mut c| c.take());
        connection.map(|c| (c, None)).ok_or_else(|| NoRoute {
            permanent: false,
            status: BAD_CONNECTION,
            reason: "the ODMR connection was lost; left for the next ATRN".to_string(),
        })
    }

    /// Puts the connection back after a job that ended well.
    pub(super) fn give_back(&self, connection: Connection) {
        if let Ok(mut slot) = self.connection.lock() {
            *slot = Some(connection);
        }
    }

    /// The connection after the run, when it is still good: the caller says QUIT.
    pub fn into_connection(self) -> Option<Connection> {
        self.connection.into_inner().ok().flatten()
    }
}
