//! The live feed: every written document gets an increasing id; the last `RETAINED` are kept,
//! so that a client reconnecting with `Last-Event-ID` receives what it missed exactly once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::sink::{Feed, Written};

/// How many feed events are kept for reconnecting clients.
pub const RETAINED: usize = 10_000;

/// A numbered feed event.
#[derive(Debug, Clone)]
pub struct FeedEvent {
    pub id: u64,
    pub written: Arc<Written>,
}

/// The numbered feed shared by every SSE client.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    retained: Arc<Mutex<VecDeque<FeedEvent>>>,
    live: broadcast::Sender<FeedEvent>,
}

impl LiveFeed {
    /// Numbers what the sink announces on `feed`; runs until the feed closes.
    pub fn spawn(feed: &Feed) -> Self {
        let (live, _) = broadcast::channel(4096);
        let me = LiveFeed {
            retained: Arc::new(Mutex::new(VecDeque::with_capacity(RETAINED))),
            live,
        };
        let mut rx = feed.subscribe();
        let numbered = me.clone();
        tokio::spawn(async move {
            let mut next = 1u64;
            loop {
                match rx.recv().await {
                    Ok(written) => {
                        numbered.push(FeedEvent { id: next, written });
                        next += 1;
                    }
                    // Announcements dropped while this task lagged are still in the store.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        me
    }

    fn push(&self, event: FeedEvent) {
        if let Ok(mut r) = self.retained.lock() {
            if r.len() == RETAINED {
                r.pop_front();
            }
            r.push_back(event.clone());
        }
        let _ = self.live.send(event);
    }

    /// A live subscription plus the retained events after `after` (subscribe first, so that
    /// nothing falls between the two; the caller skips live ids it already sent).
    pub fn resume(&self, after: u64) -> (Vec<FeedEvent>, broadcast::Receiver<FeedEvent>) {
        let rx = self.live.subscribe();
        let backlog = self
            .retained
            .lock()
            .map(|r| r.iter().filter(|e| e.id > after).cloned().collect())
            .unwrap_or_default();
        (backlog, rx)
    }
}
