//! Servers the end-to-end tests start on loopback.

pub mod dns;
pub mod scripted;
pub mod smtp;
pub mod tls;
