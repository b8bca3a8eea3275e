//! The webhook's I/O shell: review parsing and answering, HTTP routes, the TLS listener and the
//! reloading certificate.

pub mod handler;
pub mod lean;
pub mod limits;
pub mod review;
pub mod server;
pub mod tls;
