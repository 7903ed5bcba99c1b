//! Byte-level readers and writers for CMPP's big-endian integers and NUL-padded octet strings.

use crate::error::{Error, Result};

/// Reads fields from a PDU body; every read is bounds-checked and names the field on failure.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated(field))?;
        let out = self.buf.get(self.pos..end).ok_or(Error::Truncated(field))?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.bytes(1, field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array::<4>(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array::<8>(field)?))
    }

    /// A fixed-width, NUL-padded octet string; the value ends at the first NUL.
    pub(crate) fn fixed_str(&mut self, n: usize, field: &'static str) -> Result<String> {
        let raw = self.bytes(n, field)?;
        Ok(octets_to_string(raw))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails if bytes are left over after the last field.
    pub(crate) fn finish(self, pdu: &'static str) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Error::Malformed(format!(
                "{pdu}: {} unexpected trailing bytes",
                self.remaining()
            )))
        }
    }
}

/// The text of a NUL-padded octet string (up to the first NUL; invalid UTF-8 is replaced).
pub(crate) fn octets_to_string(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Appends fields to a PDU body.
#[derive(Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer::default()
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }

    /// Writes `v` into an `n`-octet field padded with NULs; longer values are an error.
    pub(crate) fn fixed_str(&mut self, v: &str, n: usize, field: &'static str) -> Result<()> {
        let raw = v.as_bytes();
        if raw.len() > n {
            return Err(Error::FieldTooLong { field, max: n });
        }
        self.buf.extend_from_slice(raw);
        self.buf.resize(self.buf.len() + (n - raw.len()), 0);
        Ok(())
    }

    pub(crate) fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_strings_pad_and_trim() {
        let mut w = Writer::new();
        w.fixed_str("ab", 4, "x").expect("fits");
        assert_eq!(w.into_inner(), b"ab\0\0");
        let mut w = Writer::new();
        assert!(matches!(
            w.fixed_str("abcde", 4, "x"),
            Err(Error::FieldTooLong { field: "x", max: 4 })
        ));
        let mut r = Reader::new(b"ab\0\0cd");
        assert_eq!(r.fixed_str(4, "x").expect("read"), "ab");
        assert!(matches!(r.u32("y"), Err(Error::Truncated("y"))));
        assert_eq!(r.remaining(), 2);
    }
}
