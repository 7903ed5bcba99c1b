//! Reassembly of long (concatenated) incoming messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::content::{decode_text, split_udh};
use crate::error::{Error, Result};

/// Collects the parts of concatenated messages and returns the text once all parts are in.
///
/// Parts are keyed by sender, reference and part count; incomplete messages are dropped after
/// `ttl`, and at most `max_pending` are kept (the oldest is evicted first), so hostile input
/// cannot grow memory without bound.
#[derive(Debug)]
pub struct Reassembler {
    ttl: Duration,
    max_pending: usize,
    pending: HashMap<(String, u16, u8), Partial>,
}

#[derive(Debug)]
struct Partial {
    msg_fmt: u8,
    parts: Vec<Option<Vec<u8>>>,
    filled: usize,
    started: Instant,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler::new(Duration::from_secs(300))
    }
}

impl Reassembler {
    /// A reassembler that forgets incomplete messages after `ttl` (keeps at most 1024 pending).
    pub fn new(ttl: Duration) -> Self {
        Reassembler {
            ttl,
            max_pending: 1024,
            pending: HashMap::new(),
        }
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

    /// Adds one received part; returns the full text when the message is complete.
    ///
    /// Content without UDH (`tp_udhi == 0`), or with a UDH that has no concatenation element, is
    /// returned at once. Parts are joined as octets before decoding, so a character split across
    /// parts by the sender still decodes.
    pub fn push(
        &mut self,
        sender: &str,
        msg_fmt: u8,
        tp_udhi: u8,
        content: &[u8],
    ) -> Result<Option<String>> {
        self.push_at(sender, msg_fmt, tp_udhi, content, Instant::now())
    }

    /// [`Reassembler::push`] with an explicit clock, for tests.
    pub fn push_at(
        &mut self,
        sender: &str,
        msg_fmt: u8,
        tp_udhi: u8,
        content: &[u8],
        now: Instant,
    ) -> Result<Option<String>> {
        self.expire(now);
        if tp_udhi == 0 {
            return Ok(Some(decode_text(msg_fmt, content)));
        }
        let (concat, payload) = split_udh(content)?;
        let Some(concat) = concat else {
            return Ok(Some(decode_text(msg_fmt, payload)));
        };
        if concat.total == 1 {
            return Ok(Some(decode_text(msg_fmt, payload)));
        }
        let key = (sender.to_owned(), concat.reference, concat.total);
        if !self.pending.contains_key(&key) && self.pending.len() >= self.max_pending {
            self.evict_oldest();
        }
        let entry = self.pending.entry(key.clone()).or_insert_with(|| Partial {
            msg_fmt,
            parts: vec![None; concat.total as usize],
            filled: 0,
            started: now,
        });
        let slot = entry
            .parts
            .get_mut(concat.seq as usize - 1)
            .ok_or_else(|| Error::Malformed("concatenation part out of range".into()))?;
        if slot.is_none() {
            entry.filled += 1;
        }
        *slot = Some(payload.to_vec());
        if entry.filled < entry.parts.len() {
            return Ok(None);
        }
        let Some(done) = self.pending.remove(&key) else {
            return Ok(None);
        };
        let joined: Vec<u8> = done.parts.into_iter().flatten().flatten().collect();
        Ok(Some(decode_text(done.msg_fmt, &joined)))
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.started) < ttl);
    }

    fn evict_oldest(&mut self) {
        if let Some(key) = self
            .pending
            .iter()
            .min_by_key(|(_, p)| p.started)
            .map(|(k, _)| k.clone())
        {
            self.pending.remove(&key);
        }
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
        r.push_at("9", 0, 0, b"plain", t0 + Duration::from_secs(60))
            .expect("p");
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn rejects_malformed_udh() {
        let mut r = Reassembler::default();
        assert!(r.push("1", 0, 1, &[]).is_err());
        assert!(r.push("1", 0, 1, &[5, 0, 3, 1, 2, 3]).is_err());
    }
}
