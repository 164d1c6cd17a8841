//! Small pieces that several stages share: retries with backoff, files private to the engine's
//! user, the failure contract (a panic ends the process, except where one payload is isolated),
//! the stages' heartbeats, and the lock that keeps a second engine off a data directory.

pub mod backoff;
pub mod codec;
pub mod fault;
pub mod heartbeat;
pub(crate) mod lock;
pub mod private;

pub use backoff::Backoff;
pub use heartbeat::{unix_seconds, Stage, StageHealth};
