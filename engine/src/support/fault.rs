//! The failure contract for panics (docs/design.md): a panic while handling one payload is that
//! payload's fault and becomes a dead letter ([`isolate`]); a panic anywhere else is the
//! engine's fault, and the process ends at once with a non-zero exit and one log line, so that
//! a supervisor restarts it, instead of hanging with a dead thread while `/healthz` says ok.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The exit code of a process ended by a panic (EX_SOFTWARE).
pub const PANIC_EXIT_CODE: i32 = 70;

/// The exit code of a cluster process whose connection to another process of the cluster broke
/// (EX_UNAVAILABLE): that process stopped or is unreachable, and the dataflow cannot go on
/// without it. Restarting every process resumes from their checkpoints (docs/cluster.md).
pub const PEER_LOST_EXIT_CODE: i32 = 69;

/// Which process of the cluster a thread of timely's network layer talks to (`timely:recv-I`,
/// `timely:send-I`); `None` for every other thread.
fn peer_of(thread: &str) -> Option<&str> {
    thread
        .strip_prefix("timely:recv-")
        .or_else(|| thread.strip_prefix("timely:send-"))
}

thread_local! {
    /// How many [`isolate`] calls are running on this thread.
    static ISOLATED: Cell<u32> = const { Cell::new(0) };
}

/// True while this thread runs inside [`isolate`].
pub fn isolated() -> bool {
    ISOLATED.with(|d| d.get() > 0)
}

/// Runs `f`, turning a panic inside it into `Err` with a fixed description; the process-wide
/// hook of [`exit_on_panic`] lets such a panic through. For work on one untrusted payload only,
/// whose failure must not stop the stream.
pub fn isolate<R>(f: impl FnOnce() -> R) -> Result<R, &'static str> {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            ISOLATED.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    ISOLATED.with(|d| d.set(d.get() + 1));
    let _depth = Depth;
    catch_unwind(AssertUnwindSafe(f)).map_err(|_| "panicked")
}

/// Installs the process-wide panic hook: outside [`isolate`], log one line (thread and source
/// location, never the panic's message, which may quote a payload) and exit with
/// [`PANIC_EXIT_CODE`].
pub fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        if isolated() {
            return;
        }
        let thread = std::thread::current();
        if let Some(peer) = thread.name().and_then(peer_of) {
            tracing::error!(
                peer,
                "the connection to another process of the cluster broke; this process stops so that the cluster can be restarted"
            );
            eprintln!(
                "error: the connection to process {peer} of the cluster broke (it stopped or is unreachable); \
                 exiting with code {PEER_LOST_EXIT_CODE}: restart every process of the cluster, each \
                 continues from its newest checkpoint"
            );
            std::process::exit(PEER_LOST_EXIT_CODE);
        }
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = %location,
            "a thread of the engine panicked; the process exits so that it is restarted"
        );
        eprintln!(
            "error: a thread of the engine panicked at {location}; exiting with code {PANIC_EXIT_CODE}"
        );
        std::process::exit(PANIC_EXIT_CODE);
    }));
}

/// Failure drills for tests and chaos exercises (only with the `chaos` feature, which release
/// builds leave out): `CDS_CHAOS=panic:STAGE` panics the stage, `CDS_CHAOS=stall:STAGE` blocks
/// it for good, each on the first input the stage takes (`STAGE`: ingest, gold, rules, sink,
/// lake).
pub fn drill(stage: super::Stage) {
    #[cfg(feature = "chaos")]
    {
        use std::sync::OnceLock;
        static DRILL: OnceLock<Option<(String, String)>> = OnceLock::new();
        let drill = DRILL.get_or_init(|| {
            let v = std::env::var("CDS_CHAOS").ok()?;
            let (what, at) = v.split_once(':')?;
            Some((what.to_owned(), at.to_owned()))
        });
        if let Some((what, at)) = drill {
            if at == stage.name() {
                match what.as_str() {
                    "panic" => panic!("chaos drill: a panic in the {at} stage"),
                    "stall" => loop {
                        std::thread::park();
                    },
                    _ => {}
                }
            }
        }
    }
    #[cfg(not(feature = "chaos"))]
    let _ = stage;
}

/// The marker that makes a decoder panic in a failure drill (feature `chaos` only).
pub const DECODER_PANIC_MARKER: &[u8] = b"CDS-CHAOS-DECODER-PANIC";

/// Failure drill for the decoders (feature `chaos` only): a payload holding
/// [`DECODER_PANIC_MARKER`] panics the decoder, as a parser defect would.
pub fn drill_payload(payload: &[u8]) {
    #[cfg(feature = "chaos")]
    if payload
        .windows(DECODER_PANIC_MARKER.len())
        .any(|w| w == DECODER_PANIC_MARKER)
    {
        panic!("chaos drill: a decoder panic");
    }
    #[cfg(not(feature = "chaos"))]
    let _ = payload;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_timely_network_threads_name_a_peer() {
        assert_eq!(peer_of("timely:recv-1"), Some("1"));
        assert_eq!(peer_of("timely:send-12"), Some("12"));
        assert_eq!(peer_of("timely:work-0"), None);
        assert_eq!(peer_of("cds-rules-0"), None);
    }

    #[test]
    fn isolate_catches_and_resets() {
        assert!(!isolated());
        assert_eq!(isolate(|| 3), Ok(3));
        let caught = isolate(|| {
            assert!(isolated());
            let nested = isolate(|| -> u8 { panic!("inner") });
            assert!(nested.is_err());
            assert!(isolated(), "the outer region is still open");
            1
        });
        assert_eq!(caught, Ok(1));
        assert!(!isolated());
    }
}
