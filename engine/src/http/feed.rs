//! The live feed: every written document gets an increasing id; the last `RETAINED` are kept,
//! so that a client reconnecting with `Last-Event-ID` receives what it missed exactly once.
//!
//! The retained events are handed to streams as one shared, immutable snapshot (an `Arc`,
//! rebuilt only after a new event), so a thousand reconnecting clients do not each copy ten
//! thousand events; [`StreamSlots`] bounds how many streams are open at all and per token.

use std::collections::{HashMap, VecDeque};
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
    retained: Arc<Mutex<Retained>>,
    live: broadcast::Sender<FeedEvent>,
}

#[derive(Debug, Default)]
struct Retained {
    events: VecDeque<FeedEvent>,
    /// The events as one shared list; `None` after a push until the next reader builds it.
    snapshot: Option<Arc<[FeedEvent]>>,
}

/// The retained events after some id: a shared snapshot and where to start in it.
#[derive(Debug, Clone)]
pub struct Backlog {
    events: Arc<[FeedEvent]>,
    start: usize,
}

impl Backlog {
    /// The events, in id order.
    pub fn events(&self) -> &[FeedEvent] {
        self.events.get(self.start..).unwrap_or_default()
    }

    /// The event at position `i` of [`Backlog::events`].
    pub fn get(&self, i: usize) -> Option<&FeedEvent> {
        self.events().get(i)
    }
}
impl LiveFeed {
    /// Numbers what the sink announces on `feed`; runs until the feed closes.
    pub fn spawn(feed: &Feed) -> Self {
        let (live, _) = broadcast::channel(4096);
        let me = LiveFeed {
            retained: Arc::new(Mutex::new(Retained {
                events: VecDeque::with_capacity(RETAINED),
                snapshot: None,
            })),
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
            if r.events.len() == RETAINED {
                r.events.pop_front();
            }
            r.events.push_back(event.clone());
            r.snapshot = None;
        }
        let _ = self.live.send(event);
    }

    /// A live subscription plus the retained events after `after` (subscribe first, so that
    /// nothing falls between the two; the caller skips live ids it already sent).
    pub fn resume(&self, after: u64) -> (Backlog, broadcast::Receiver<FeedEvent>) {
        let rx = self.live.subscribe();
        let events: Arc<[FeedEvent]> = match self.retained.lock() {
            Ok(mut r) => {
                if let Some(s) = r.snapshot.clone() {
                    s
                } else {
                    let s: Arc<[FeedEvent]> = r.events.iter().cloned().collect();
                    r.snapshot = Some(s.clone());
                    s
                }
            }
            Err(_) => Arc::from(Vec::new()),
        };
        // Ids increase along the list.
        let start = events.partition_point(|e| e.id <= after);
        (Backlog { events, start }, rx)
    }
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("too many live streams for this token")]
    PerToken,
    #[error("too many live streams")]
    Total,
}

/// Bounds the number of open live streams, in total and per token.
#[derive(Debug, Clone)]
pub struct StreamSlots {
    per_token: usize,
    total: usize,
    open: Arc<Mutex<(usize, HashMap<String, usize>)>>,
}

/// One open stream; frees its slot when dropped (the client went away).
#[derive(Debug)]
pub struct Slot {
    token: String,
    open: Arc<Mutex<(usize, HashMap<String, usize>)>>,
}

impl StreamSlots {
    pub fn new(per_token: usize, total: usize) -> Self {
        StreamSlots {
            per_token,
            total,
            open: Arc::default(),
        }
    }

    /// A slot for a stream of `token`, if both limits allow it.
    pub fn acquire(&self, token: &str) -> Result<Slot, SlotError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= self.total {
            return Err(SlotError::Total);
        }
        let mine = open.1.get(token).copied().unwrap_or(0);
        if mine >= self.per_token {
            return Err(SlotError::PerToken);
        }
        open.0 += 1;
        open.1.insert(token.to_owned(), mine + 1);
        Ok(Slot {
            token: token.to_owned(),
            open: self.open.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.token) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.1.remove(&self.token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_freed() {
        let slots = StreamSlots::new(2, 3);
        let a1 = slots.acquire("a").expect("a1");
        let _a2 = slots.acquire("a").expect("a2");
        assert_eq!(slots.acquire("a").err(), Some(SlotError::PerToken));
        let _b1 = slots.acquire("b").expect("b1");
        assert_eq!(slots.acquire("c").err(), Some(SlotError::Total));
        drop(a1);
        assert!(slots.acquire("a").is_ok());
    }
}
