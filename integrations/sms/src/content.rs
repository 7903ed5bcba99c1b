//! Message text: `Msg_Fmt` encodings, long-message segmentation with a user data header (UDH).

use crate::error::{Error, Result};

/// `Msg_Fmt` values used by CMPP.
pub struct MsgFmt;

impl MsgFmt {
    /// 0: ASCII.
    pub const ASCII: u8 = 0;
    /// 4: binary.
    pub const BINARY: u8 = 4;
    /// 8: UCS-2 (sent as UTF-16BE).
    pub const UCS2: u8 = 8;
    /// 15: GBK (Chinese).
    pub const GBK: u8 = 15;
}

/// The most octets one SMS segment's `Msg_Content` may hold.
pub const MAX_SEGMENT_OCTETS: usize = 140;
/// Length of the concatenation UDH this crate writes: `05 00 03 ref total seq`.
pub const UDH_LEN: usize = 6;

/// One SUBMIT's worth of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// `Pk_total`.
    pub pk_total: u8,
    /// `Pk_number` (1-based).
    pub pk_number: u8,
    /// `TP_udhi`: 1 when `content` starts with a UDH.
    pub tp_udhi: u8,
    /// `Msg_Fmt`.
    pub msg_fmt: u8,
    /// `Msg_Content`, UDH included, at most [`MAX_SEGMENT_OCTETS`].
    pub content: Vec<u8>,
}

/// Encodes text for SMS: ASCII (`Msg_Fmt` 0) when every character is ASCII, else UCS-2 (`Msg_Fmt` 8).
pub fn encode_text(text: &str) -> (u8, Vec<u8>) {
    if text.is_ascii() {
        (MsgFmt::ASCII, text.as_bytes().to_vec())
    } else {
        let bytes = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        (MsgFmt::UCS2, bytes)
    }
}

/// Decodes message content (without UDH) in the given `Msg_Fmt`. Invalid input is replaced, never fatal.
pub fn decode_text(msg_fmt: u8, bytes: &[u8]) -> String {
    match msg_fmt {
        MsgFmt::UCS2 => {
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|c| match c {
                    [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                    _ => 0xFFFD, // odd trailing octet
                })
                .collect();
            String::from_utf16_lossy(&units)
        }
        MsgFmt::GBK => encoding_rs::GBK
            .decode_without_bom_handling(bytes)
            .0
            .into_owned(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Splits `text` into SUBMIT segments.
///
/// Text that fits in 140 octets is one segment without UDH. Longer text gets a 6-octet
/// concatenation UDH (`05 00 03 reference total seq`) per segment, leaving 134 octets of text;
/// UCS-2 segments never split a UTF-16 surrogate pair.
pub fn split_message(text: &str, reference: u8) -> Result<Vec<Segment>> {
    let (msg_fmt, bytes) = encode_text(text);
    if bytes.len() <= MAX_SEGMENT_OCTETS {
        return Ok(vec![Segment {
            pk_total: 1,
            pk_number: 1,
            tp_udhi: 0,
            msg_fmt,
            content: bytes,
        }]);
    }
    let room = MAX_SEGMENT_OCTETS - UDH_LEN;
    let mut chunks: Vec<&[u8]> = Vec::new();
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        let mut take = room.min(rest.len());
        if msg_fmt == MsgFmt::UCS2 && take < rest.len() {
            // `room` is even, so `take` ends on a code-unit boundary; back off one unit if that
            // unit is a high surrogate whose low half would land in the next segment.
            let last = u16::from_be_bytes([rest[take - 2], rest[take - 1]]);
            if (0xD800..0xDC00).contains(&last) {
                take -= 2;
            }
        }
        let (chunk, tail) = rest.split_at(take);
        chunks.push(chunk);
        rest = tail;
    }
    let total = u8::try_from(chunks.len()).map_err(|_| Error::MessageTooLong(chunks.len()))?;
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let seq = i as u8 + 1;
            let mut content = Vec::with_capacity(UDH_LEN + chunk.len());
            content.extend_from_slice(&[0x05, 0x00, 0x03, reference, total, seq]);
            content.extend_from_slice(chunk);
            Segment {
                pk_total: total,
                pk_number: seq,
                tp_udhi: 1,
                msg_fmt,
                content,
            }
        })
        .collect())
}

/// The concatenation information from a user data header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concat {
    /// The message reference (8-bit IEI 0x00 or 16-bit IEI 0x08).
    pub reference: u16,
    /// Number of parts.
    pub total: u8,
    /// This part's 1-based number.
    pub seq: u8,
}

/// Splits content that starts with a UDH into its concatenation info (if any) and the payload.
pub fn split_udh(content: &[u8]) -> Result<(Option<Concat>, &[u8])> {
    let (&udhl, rest) = content
        .split_first()
        .ok_or_else(|| Error::Malformed("TP_udhi set but content is empty".into()))?;
    let udhl = udhl as usize;
    if rest.len() < udhl {
        return Err(Error::Malformed(format!(
            "UDH length {udhl} exceeds content of {} octets",
            content.len()
        )));
    }
    let (mut header, payload) = rest.split_at(udhl);
    let mut concat = None;
    while let [iei, iedl, tail @ ..] = header {
        let iedl = *iedl as usize;
        if tail.len() < iedl {
            return Err(Error::Malformed(
                "UDH information element overruns header".into(),
            ));
        }
        let (data, next) = tail.split_at(iedl);
        match (iei, data) {
            (0x00, [r, total, seq]) => {
                concat = Some(Concat {
                    reference: u16::from(*r),
                    total: *total,
                    seq: *seq,
                })
            }
            (0x08, [r1, r2, total, seq]) => {
                concat = Some(Concat {
                    reference: u16::from_be_bytes([*r1, *r2]),
                    total: *total,
                    seq: *seq,
                })
            }
            _ => {}
        }
        header = next;
    }
    if !header.is_empty() {
        return Err(Error::Malformed(
            "UDH ends inside an information element".into(),
        ));
    }
    if let Some(c) = concat
        && (c.total == 0 || c.seq == 0 || c.seq > c.total)
    {
        return Err(Error::Malformed(format!(
            "concatenation part {} of {}",
            c.seq, c.total
        )));
    }
    Ok((concat, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ascii_and_chinese_are_single_segments() {
        let s = split_message("hello", 1).expect("split");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].msg_fmt, MsgFmt::ASCII);
        assert_eq!(s[0].tp_udhi, 0);
        let s = split_message("您好", 1).expect("split");
        assert_eq!(s[0].msg_fmt, MsgFmt::UCS2);
        assert_eq!(s[0].content, [0x60, 0xA8, 0x59, 0x7D]);
        // 70 Chinese characters fill exactly 140 octets.
        let s = split_message(&"中".repeat(70), 1).expect("split");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn long_chinese_is_split_with_udh() {
        let text = "中".repeat(71);
        let s = split_message(&text, 0x2A).expect("split");
        assert_eq!(s.len(), 2);
        assert_eq!(&s[0].content[..6], &[5, 0, 3, 0x2A, 2, 1]);
        assert_eq!(s[0].content.len(), 140);
        assert_eq!(&s[1].content[..6], &[5, 0, 3, 0x2A, 2, 2]);
        assert_eq!(s[1].content.len(), 6 + 4 * 2);
        assert!(s.iter().all(|x| x.tp_udhi == 1 && x.pk_total == 2));
    }

    #[test]
    fn surrogate_pairs_are_not_split() {
        // 66 BMP characters (132 octets) then an emoji (surrogate pair) straddling octet 134.
        let text = format!("{}😀{}", "中".repeat(66), "文".repeat(10));
        let s = split_message(&text, 7).expect("split");
        // The first segment must stop before the pair: 132 octets of text.
        assert_eq!(s[0].content.len(), 6 + 132);
        let joined: Vec<u8> = s.iter().flat_map(|x| x.content[6..].to_vec()).collect();
        assert_eq!(decode_text(MsgFmt::UCS2, &joined), text);
        for seg in &s {
            // every segment decodes on its own without replacement characters
            assert!(!decode_text(MsgFmt::UCS2, &seg.content[6..]).contains('\u{FFFD}'));
        }
    }

    #[test]
    fn too_long_messages_fail() {
        let text = "a".repeat(134 * 256);
        assert!(matches!(
            split_message(&text, 0),
            Err(Error::MessageTooLong(256))
        ));
    }

    #[test]
    fn decodes_gbk_ucs2_ascii() {
        // "中文" in GBK is D6 D0 CE C4.
        assert_eq!(decode_text(MsgFmt::GBK, &[0xD6, 0xD0, 0xCE, 0xC4]), "中文");
        assert_eq!(decode_text(MsgFmt::UCS2, &[0x4E, 0x2D, 0x65, 0x87]), "中文");
        assert_eq!(decode_text(MsgFmt::ASCII, b"TD"), "TD");
        // odd-length UCS-2 does not panic
        assert_eq!(decode_text(MsgFmt::UCS2, &[0x4E, 0x2D, 0x65]), "中\u{FFFD}");
    }

    #[test]
    fn udh_parsing() {
        let (c, p) = split_udh(&[5, 0, 3, 9, 3, 2, b'x']).expect("udh");
        assert_eq!(
            c,
            Some(Concat {
                reference: 9,
                total: 3,
                seq: 2
            })
        );
        assert_eq!(p, b"x");
        let (c, _) = split_udh(&[6, 8, 4, 0x12, 0x34, 2, 1]).expect("udh16");
        assert_eq!(c.map(|c| c.reference), Some(0x1234));
        assert!(split_udh(&[]).is_err());
        assert!(split_udh(&[9, 0, 3]).is_err());
        assert!(split_udh(&[5, 0, 9, 1, 1, 1]).is_err());
        assert!(split_udh(&[5, 0, 3, 1, 2, 3]).is_err()); // part 3 of 2
        assert!(split_udh(&[5, 0, 3, 1, 0, 0]).is_err());
        let (c, p) = split_udh(&[0, b'y']).expect("empty udh");
        assert_eq!((c, p), (None, &b"y"[..]));
    }
}
