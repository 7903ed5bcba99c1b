//! Reassembly of long (concatenated) incoming messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::content::{decode_text, split_udh};
use crate::error::{Error, Result};

/// Collects the parts of concatenated messages and returns the text once all parts are in.
///
/// Parts are keyed by sender, reference and part count. Each part may carry a
/// token `T` (the CMPP link's not-yet-sent DELIVER_RESP), handed back with the
/// finished message, so a part is answered only once the whole message is
/// stored: a hub that stops while parts are held loses nothing, the gateway
/// sends them again. A message still incomplete after `ttl`, or the oldest one
/// when `max_pending` are held, is handed back by [`Reassembler::take_overdue`]
/// with what arrived (gaps marked), so hostile input cannot grow memory
/// without bound and a part that never comes does not hold the rest forever.
#[derive(Debug)]
pub struct Reassembler<T = ()> {
    ttl: Duration,
    max_pending: usize,
    pending: HashMap<(String, u16, u8), Partial<T>>,
    overdue: Vec<Reassembled<T>>,
}

#[derive(Debug)]
struct Partial<T> {
    sender: String,
    msg_fmt: u8,
    parts: Vec<Option<Vec<u8>>>,
    filled: usize,
    started: Instant,
    held: Vec<T>,
}

/// A message put together from its parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Reassembled<T> {
    /// The sender.
    pub sender: String,
    /// The text; in a message handed back incomplete, each missing part is
    /// [`MISSING_PART`].
    pub text: String,
    /// Whether every part arrived.
    pub complete: bool,
    /// The tokens of the parts, in the order they arrived (a part sent twice
    /// holds two).
    pub held: Vec<T>,
}

/// What stands for a part that never arrived in a message handed back incomplete.
pub const MISSING_PART: &str = "[…]";

impl<T> Default for Reassembler<T> {
    fn default() -> Self {
        Reassembler::new(Duration::from_secs(300))
    }
}

impl Reassembler<()> {
    /// Adds one received part; returns the full text when the message is complete.
    ///
    /// Content without UDH (`tp_udhi == 0`), or with a UDH that has no concatenation element, is
    /// returned at once. Parts are joined as octets before decoding, so a character split across
    /// parts by the sender still decodes.
    pub fn push(&mut self, sender: &str, msg_fmt: u8, tp_udhi: u8, content: &[u8]) -> Result<Option<String>> {
        self.push_at(sender, msg_fmt, tp_udhi, content, Instant::now())
    }

    /// [`Reassembler::push`] with an explicit clock, for tests.
    pub fn push_at(&mut self, sender: &str, msg_fmt: u8, tp_udhi: u8, content: &[u8], now: Instant) -> Result<Option<String>> {
        Ok(self.push_held(sender, msg_fmt, tp_udhi, content, (), now)?.map(|m| m.text))
    }
}

impl<T> Reassembler<T> {
    /// A reassembler that hands back incomplete messages after `ttl` (keeps at most 1024 pending).
    pub fn new(ttl: Duration) -> Self {
        Reassembler { ttl, max_pending: 1024, pending: HashMap::new(), overdue: Vec::new() }
    }

    /// Sets how many incomplete messages may be pending at once.
    pub fn with_max_pending(mut self, max_pending: usize) -> Self {
        self.max_pending = max_pending.max(1);
        self
    }

    /// Incomplete messages currently held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Adds one received part with its token; returns the message, with the
    /// tokens of all its parts, once it is complete. A message of one part is
    /// returned at once with its own token.
    pub fn push_held(&mut self, sender: &str, msg_fmt: u8, tp_udhi: u8, content: &[u8], token: T, now: Instant) -> Result<Option<Reassembled<T>>> {
        self.expire(now);
        let whole = |payload: &[u8], token: T| Reassembled { sender: sender.to_owned(), text: decode_text(msg_fmt, payload), complete: true, held: vec![token] };
        if tp_udhi == 0 {
            return Ok(Some(whole(content, token)));
        }
        let (concat, payload) = split_udh(content)?;
        let Some(concat) = concat else {
            return Ok(Some(whole(payload, token)));
        };
        if concat.total == 1 {
            return Ok(Some(whole(payload, token)));
        }
        let key = (sender.to_owned(), concat.reference, concat.total);
        if !self.pending.contains_key(&key) && self.pending.len() >= self.max_pending {
            self.evict_oldest();
        }
        let entry = self.pending.entry(key.clone()).or_insert_with(|| Partial {
            sender: sender.to_owned(),
            msg_fmt,
            parts: (0..concat.total).map(|_| None).collect(),
            filled: 0,
            started: now,
            held: Vec::new(),
        });
        let slot = entry
            .parts
            .get_mut(concat.seq as usize - 1)
            .ok_or_else(|| Error::Malformed("concatenation part out of range".into()))?;
        if slot.is_none() {
            entry.filled += 1;
        }
        *slot = Some(payload.to_vec());
        entry.held.push(token);
        if entry.filled < entry.parts.len() {
            return Ok(None);
        }
        Ok(self.pending.remove(&key).map(Partial::finish))
    }

    /// Messages given up on: incomplete after the time to live, or evicted to
    /// keep at most `max_pending`. Each comes back with what arrived and the
    /// tokens of its parts.
    pub fn take_overdue(&mut self, now: Instant) -> Vec<Reassembled<T>> {
        self.expire(now);
        std::mem::take(&mut self.overdue)
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        let late: Vec<_> = self.pending.iter().filter(|(_, p)| now.saturating_duration_since(p.started) >= ttl).map(|(k, _)| k.clone()).collect();
        for key in late {
            if let Some(p) = self.pending.remove(&key) {
                self.overdue.push(p.finish());
            }
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(key) = self.pending.iter().min_by_key(|(_, p)| p.started).map(|(k, _)| k.clone())
            && let Some(p) = self.pending.remove(&key)
        {
            self.overdue.push(p.finish());
        }
    }
}

impl<T> Partial<T> {
    /// The text of the parts that arrived, decoded run by run, with each gap marked.
    fn finish(self) -> Reassembled<T> {
        let complete = self.filled == self.parts.len();
        let mut text = String::new();
        let mut run: Vec<u8> = Vec::new();
        let mut gap = false;
        for part in self.parts {
            match part {
                Some(bytes) => run.extend(bytes),
                None => {
                    text.push_str(&decode_text(self.msg_fmt, &std::mem::take(&mut run)));
                    if !gap {
                        text.push_str(MISSING_PART);
                    }
                    gap = true;
                    continue;
                }
            }
            gap = false;
        }
        text.push_str(&decode_text(self.msg_fmt, &run));
        Reassembled { sender: self.sender, text, complete, held: self.held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::{MsgFmt, split_message};

    #[test]
    fn reassembles_out_of_order_parts() {
        let text = "市民您好，".repeat(40);
        let segs = split_message(&text, 3).expect("split");
        assert!(segs.len() >= 3);
        let mut r = Reassembler::default();
        let mut out = None;
        for seg in segs.iter().rev() {
            assert!(out.is_none());
            out = r
                .push("13800138000", seg.msg_fmt, seg.tp_udhi, &seg.content)
                .expect("push");
        }
        assert_eq!(out.as_deref(), Some(text.as_str()));
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn different_senders_do_not_mix() {
        let mut r = Reassembler::default();
        let a1 = [5, 0, 3, 1, 2, 1, b'a'];
        let b2 = [5, 0, 3, 1, 2, 2, b'B'];
        assert_eq!(r.push("1", MsgFmt::ASCII, 1, &a1).expect("p"), None);
        assert_eq!(r.push("2", MsgFmt::ASCII, 1, &b2).expect("p"), None);
        assert_eq!(r.pending(), 2);
        let a2 = [5, 0, 3, 1, 2, 2, b'b'];
        assert_eq!(
            r.push("1", MsgFmt::ASCII, 1, &a2).expect("p").as_deref(),
            Some("ab")
        );
    }

    #[test]
    fn expires_and_bounds_pending() {
        let t0 = Instant::now();
        let mut r = Reassembler::new(Duration::from_secs(10)).with_max_pending(2);
        for (i, sender) in ["1", "2", "3"].iter().enumerate() {
            let at = t0 + Duration::from_secs(i as u64);
            r.push_at(sender, 0, 1, &[5, 0, 3, 1, 2, 1, b'x'], at)
                .expect("p");
        }
        assert_eq!(r.pending(), 2);
        let evicted = r.take_overdue(t0 + Duration::from_secs(3));
        assert_eq!(evicted.len(), 1, "the oldest made room");
        assert_eq!((evicted[0].sender.as_str(), evicted[0].text.as_str(), evicted[0].complete), ("1", "x[…]", false));
        r.push_at("9", 0, 0, b"plain", t0 + Duration::from_secs(60))
            .expect("p");
        assert_eq!(r.pending(), 0);
        let mut late: Vec<_> = r.take_overdue(t0 + Duration::from_secs(60)).into_iter().map(|m| m.sender).collect();
        late.sort();
        assert_eq!(late, ["2", "3"], "handed back once, not dropped");
        assert!(r.take_overdue(t0 + Duration::from_secs(61)).is_empty());
    }

    #[test]
    fn parts_are_held_until_the_message_is_whole() {
        let t0 = Instant::now();
        let mut r = Reassembler::<u32>::default();
        let part = |seq: u8, text: &[u8]| [&[5, 0, 3, 7, 3, seq][..], text].concat();
        assert_eq!(r.push_held("1", MsgFmt::ASCII, 1, &part(2, b"b"), 10, t0).expect("p"), None);
        assert_eq!(r.push_held("1", MsgFmt::ASCII, 1, &part(2, b"b"), 11, t0).expect("p"), None, "sent again");
        assert_eq!(r.push_held("1", MsgFmt::ASCII, 1, &part(1, b"a"), 12, t0).expect("p"), None);
        let done = r.push_held("1", MsgFmt::ASCII, 1, &part(3, b"c"), 13, t0).expect("p").expect("whole");
        assert_eq!(done, Reassembled { sender: "1".into(), text: "abc".into(), complete: true, held: vec![10, 11, 12, 13] });
        let single = r.push_held("1", MsgFmt::ASCII, 0, b"hi", 14, t0).expect("p").expect("whole");
        assert_eq!(single.held, [14]);
    }

    #[test]
    fn an_incomplete_message_marks_each_gap_once() {
        let t0 = Instant::now();
        let mut r = Reassembler::<()>::new(Duration::from_secs(1));
        for (seq, text) in [(1, b"a"), (4, b"d")] {
            r.push_held("1", MsgFmt::ASCII, 1, &[&[5, 0, 3, 9, 5, seq][..], text].concat(), (), t0).expect("p");
        }
        let late = r.take_overdue(t0 + Duration::from_secs(1));
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].text, "a[…]d[…]");
        assert_eq!(late[0].held.len(), 2);
    }

    #[test]
    fn rejects_malformed_udh() {
        let mut r = Reassembler::default();
        assert!(r.push("1", 0, 1, &[]).is_err());
        assert!(r.push("1", 0, 1, &[5, 0, 3, 1, 2, 3]).is_err());
    }
}
