//! The webhook's I/O shell around the pure policy. Where a newcomer starts: the path of one review.
//!
//! ```text
//! TLS connection ─► server.rs      handshake (client certificate: client_auth.rs), header
//!        │                         deadline, connection cap (room at it: established.rs),
//!        │                         graceful drain; connection.rs tells the handler the
//!        │                         client's address per request
//!        ▼
//! POST /validate/… ─► handler.rs   route → Endpoint; Content-Type, declared length (413),
//!  or /mutate/…                    in-flight and large-body caps (429) before any of the body
//!        │                         is read; then the body, with a deadline (408)
//!        ▼
//! pipeline.rs  review_pipeline     ─► review.rs + lean.rs   decode only what the rules read (400)
//!        │                         ─► covered?              a kind the entry does not send: 400
//!        │                         ─► policy::Review::new   the object typed once (policy/mod.rs)
//!        │                         ─► .needs(index)  ─► facts.rs  SubjectAccessReviews, a type
//!        │                         ─► .decide(worlds, facts)      S1–S8, N1–N5 (policy/*.rs);
//!        │                                                        policy::mutate for M1–M2,
//!        │                                                        policy::projects for P1–P4
//!        ▼
//! review::respond ─► AdmissionReview JSON (uid echoed, status code, warnings, JSON Patch)
//! ```
//!
//! Metrics and the denial log line are written in `pipeline.rs`; the certificate is reloaded by
//! `tls.rs` under the listener without dropping a connection. All of it runs on threads of its own
//! (`runtime.rs`), so a re-list or a reconcile round never queues a review; a body larger than
//! [`limits::ORDINARY_BODY_BYTES`] is read at a shared pace past those bytes and decoded on a
//! blocking thread of low priority, so it never queues the small ones; and a world the index has
//! replaced is freed there too when a review held its last reference (`snapshot.rs`).

pub mod body_wait;
pub mod client_auth;
pub mod connection;
pub mod established;
pub mod facts;
pub mod file_watch;
pub mod handler;
pub mod handshake_rate;
pub mod handshakes;
pub mod header_deadline;
pub mod lean;
pub mod limits;
pub mod log_budget;
pub mod peers;
pub mod pipeline;
pub mod review;
pub mod runtime;
pub mod server;
pub mod snapshot;
pub mod stalled_bodies;
pub mod tls;
