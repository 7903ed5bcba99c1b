use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Seconds since the Unix epoch: the time format stored in the database
/// (columns whose names end in `_ms` hold milliseconds).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A URL-safe random string carrying `bytes` bytes of entropy from the OS.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// `bytes` random bytes as lower-case hex, for ids that need no secrecy.
pub fn random_hex(bytes: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..bytes).map(|_| format!("{:02x}", rng.r#gen::<u8>())).collect()
}

/// A unique id that sorts by creation time: the milliseconds since the epoch
/// in 12 hex digits, then `random_bytes` random bytes in hex. New rows keyed
/// or indexed by it go to the end of their index, so a batch of them touches
/// one page instead of one each. Not for secrets: its time is readable.
pub fn ordered_id(random_bytes: usize) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{ms:012x}{}", random_hex(random_bytes))
}

/// A bearer secret (an access or refresh token, an authorization code) whose
/// stored key sorts by creation time: [`ordered_id`]`(2)`, a dot, then 32
/// random bytes (URL-safe base64, which has no dot).
pub fn ordered_secret() -> String {
    format!("{}.{}", ordered_id(2), random_token(32))
}

/// The key a bearer secret is stored and found under: its SHA-256 in hex,
/// after the time prefix of an [`ordered_secret`], so new keys go to the end
/// of their index (a batch of new tokens then writes one index page, not one
/// each). A secret of any other shape (one issued before these) is keyed by
/// its SHA-256 alone.
pub fn secret_key(secret: &str) -> String {
    match secret.split_once('.') {
        Some((prefix, _)) if prefix.len() == 16 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{prefix}{}", sha256_hex(secret))
        }
        _ => sha256_hex(secret),
    }
}

/// Lower-case hex SHA-256, used to store bearer secrets so a leaked database
/// does not leak usable tokens.
pub fn sha256_hex(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_secrets_have_keys_that_sort_by_time_and_older_secrets_keep_theirs() {
        let first = ordered_secret();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = ordered_secret();
        assert_ne!(first, second);
        let (k1, k2) = (secret_key(&first), secret_key(&second));
        assert!(k1 < k2, "{k1} sorts before {k2}");
        assert_eq!(k1.len(), 16 + 64);
        assert!(k1.ends_with(&sha256_hex(&first)));
        let old = random_token(32);
        assert_eq!(secret_key(&old), sha256_hex(&old));
        assert_eq!(secret_key("not-hex-prefix.x"), sha256_hex("not-hex-prefix.x"));
    }
}
