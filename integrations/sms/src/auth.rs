//! CMPP 2.0 login authenticators and the `MMDDHHMMSS` timestamp.

use chrono::{Datelike, FixedOffset, Offset, Timelike, Utc};
use md5::{Digest, Md5};

/// `AuthenticatorSource = MD5(Source_Addr + 9 zero octets + secret + timestamp)`, the timestamp
/// written as ten decimal digits (`MMDDHHMMSS`, zero-padded).
pub fn authenticator_source(source_addr: &str, secret: &str, timestamp: u32) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(source_addr.as_bytes());
    md5.update([0u8; 9]);
    md5.update(secret.as_bytes());
    md5.update(format!("{timestamp:010}").as_bytes());
    md5.finalize().into()
}

/// `AuthenticatorISMG = MD5(Status + AuthenticatorSource + secret)` (CMPP 2.0: `Status` is one octet).
pub fn authenticator_ismg(status: u8, authenticator_source: &[u8; 16], secret: &str) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update([status]);
    md5.update(authenticator_source);
    md5.update(secret.as_bytes());
    md5.finalize().into()
}

/// The current time in China Standard Time (UTC+8) as the CMPP `MMDDHHMMSS` number.
pub fn cmpp_timestamp_now() -> u32 {
    let now = Utc::now().with_timezone(&china_offset());
    now.month() * 100_000_000
        + now.day() * 1_000_000
        + now.hour() * 10_000
        + now.minute() * 100
        + now.second()
}

/// UTC+8, the offset CMPP gateways use for their timestamps.
pub(crate) fn china_offset() -> FixedOffset {
    // 8 hours is always a valid offset; fall back to UTC rather than panic.
    FixedOffset::east_opt(8 * 3600).unwrap_or(Utc.fix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_authenticators_match_independent_md5() {
        // Expected values computed independently with Python:
        //   hashlib.md5(b"901234" + b"\0"*9 + b"secret" + b"1128183000").hexdigest()
        //   hashlib.md5(b"\x00" + auth_source + b"secret").hexdigest()
        let src = authenticator_source("901234", "secret", 1_128_183_000);
        assert_eq!(hex(&src), "781e31ca6ece2d85b3e5b61a570397c2");
        let ismg = authenticator_ismg(0, &src, "secret");
        assert_eq!(hex(&ismg), "78fe1299941170b444a53b0c323c9517");
    }

    #[test]
    fn timestamp_is_ten_digits_max() {
        let ts = cmpp_timestamp_now();
        assert!((101_000_000..=1_231_235_959).contains(&ts), "{ts}");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
