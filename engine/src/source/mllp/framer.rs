//! The MLLP framer: cuts a byte stream into messages (`0x0B` message `0x1C 0x0D`).
//!
//! It is pure (bytes in, messages out, no I/O) so that the same code serves plain TCP and TLS
//! connections, and so that it can be fuzzed on its own: a sender's bytes are outside data,
//! and however they are cut by the network, the framer must neither panic nor grow without
//! bound.

/// Start of a frame (vertical tab).
pub const START: u8 = 0x0b;
/// End of a frame (file separator), followed by [`CR`].
pub const END: u8 = 0x1c;
/// Carriage return: ends a frame after [`END`], and separates HL7 v2 segments.
pub const CR: u8 = 0x0d;

/// What the framer found in the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// A whole message, without its framing bytes.
    Message(Vec<u8>),
    /// A frame longer than the largest message taken: its bytes were dropped, and the sender
    /// is answered AR.
    TooLong,
}

/// Cuts messages out of a byte stream fed in pieces of any size.
///
/// Bytes outside a frame are ignored (the CR after END among them); a START inside a frame
/// starts it again, so a sender that gave up on a frame half-way can resend it; a frame that
/// grows past `max_message_bytes` is dropped, so a connection holds at most that much.
#[derive(Debug)]
pub struct Framer {
    frame: Vec<u8>,
    in_frame: bool,
    max_message_bytes: usize,
}

impl Framer {
    pub fn new(max_message_bytes: usize) -> Self {
        Framer {
            frame: Vec::new(),
            in_frame: false,
            max_message_bytes,
        }
    }

    /// Whether a frame has begun and not ended (a connection closed now loses it).
    pub fn in_frame(&self) -> bool {
        self.in_frame
    }

    /// Takes the next bytes of the stream; appends what they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Framed>) {
        let mut rest = bytes;
        while !rest.is_empty() {
            if !self.in_frame {
                match rest.iter().position(|b| *b == START) {
                    Some(at) => {
                        self.in_frame = true;
                        self.frame.clear();
                        rest = &rest[at + 1..];
                    }
                    None => return,
                }
                continue;
            }
            match rest.iter().position(|b| *b == START || *b == END) {
                None => {
                    self.extend(rest, out);
                    return;
                }
                Some(at) => {
                    let marker = rest[at];
                    self.extend(&rest[..at], out);
                    rest = &rest[at + 1..];
                    if !self.in_frame {
                        // The frame ran over the limit: what follows up to the next START is
                        // the rest of it, and is skipped like any bytes outside a frame.
                        if marker == START {
                            self.in_frame = true;
                            self.frame.clear();
                        }
                        continue;
                    }
                    if marker == START {
                        self.frame.clear();
                    } else {
                        self.in_frame = false;
                        out.push(Framed::Message(std::mem::take(&mut self.frame)));
                    }
                }
            }
        }
    }

    /// Adds bytes to the open frame, dropping it once it is longer than the limit.
    fn extend(&mut self, bytes: &[u8], out: &mut Vec<Framed>) {
        if !self.in_frame {
            return;
        }
        if self.frame.len() + bytes.len() > self.max_message_bytes {
            self.in_frame = false;
            self.frame = Vec::new();
            out.push(Framed::TooLong);
        } else {
            self.frame.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 256;

    /// Feeds `bytes` cut at `cuts` (positions taken modulo the length).
    fn feed(bytes: &[u8], cuts: &[usize]) -> Vec<Framed> {
        let mut at: Vec<usize> = cuts
            .iter()
            .map(|c| if bytes.is_empty() { 0 } else { c % bytes.len() })
            .collect();
        at.push(0);
        at.push(bytes.len());
        at.sort_unstable();
        let mut framer = Framer::new(MAX);
        let mut out = Vec::new();
        for w in at.windows(2) {
            framer.push(&bytes[w[0]..w[1]], &mut out);
        }
        out
    }

    #[test]
    fn takes_frames_and_skips_what_is_between() {
        let mut out = Vec::new();
        let mut framer = Framer::new(MAX);
        framer.push(b"noise\x0bMSH|a\rPID|1\x1c\r\x0bhalf", &mut out);
        assert!(framer.in_frame());
        framer.push(b"\x0bMSH|b\x1c\r", &mut out);
        assert_eq!(
            out,
            vec![
                Framed::Message(b"MSH|a\rPID|1".to_vec()),
                Framed::Message(b"MSH|b".to_vec())
            ]
        );
        assert!(!framer.in_frame());
    }

    #[test]
    fn a_frame_over_the_limit_is_dropped_once() {
        let mut out = Vec::new();
        let mut framer = Framer::new(4);
        framer.push(b"\x0b12345\x1c\r\x0bok\x1c\r", &mut out);
        assert_eq!(out, vec![Framed::TooLong, Framed::Message(b"ok".to_vec())]);
    }

    /// A valid message: any bytes but the framing markers.
    fn message() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            any::<u8>().prop_map(|b| if b == START || b == END { b'|' } else { b }),
            0..MAX,
        )
    }

    /// Bytes a broken sender may put between frames: anything but END (an END after a stray
    /// START would close a frame of garbage, which is what the sender framed).
    fn garbage() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            any::<u8>().prop_map(|b| if b == END { START } else { b }),
            0..64,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Any bytes, cut anywhere: no panic, no message over the limit, and the cuts change
        /// nothing.
        #[test]
        fn arbitrary_bytes_cut_anywhere(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(any::<usize>(), 0..24),
        ) {
            let cut = feed(&bytes, &cuts);
            for f in &cut {
                if let Framed::Message(m) = f {
                    prop_assert!(m.len() <= MAX);
                    prop_assert!(!m.contains(&START) && !m.contains(&END));
                }
            }
            prop_assert_eq!(cut, feed(&bytes, &[]));
        }

        /// Valid frames with garbage between them, cut anywhere: every message comes out whole
        /// and in order.
        #[test]
        fn frames_among_garbage_are_recovered_intact(
            parts in proptest::collection::vec((garbage(), message()), 1..8),
            tail in garbage(),
            cuts in proptest::collection::vec(any::<usize>(), 0..24),
        ) {
            let mut stream = Vec::new();
            for (noise, m) in &parts {
                stream.extend_from_slice(noise);
                stream.push(START);
                stream.extend_from_slice(m);
                stream.extend_from_slice(&[END, CR]);
            }
            stream.extend_from_slice(&tail);
            let want: Vec<Framed> = parts.iter().map(|(_, m)| Framed::Message(m.clone())).collect();
            prop_assert_eq!(feed(&stream, &cuts), want);
        }
    }
}
