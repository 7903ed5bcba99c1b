//! Callers' personal data at rest: names and phone numbers are sealed with
//! AES-256-GCM before they reach the database, and phone numbers are also
//! kept as a keyed hash (HMAC-SHA256) so a caller's tickets can be found
//! without decrypting every row.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// Marks a sealed value, and its format.
const PREFIX: &str = "v1:";

/// The key that seals callers' data.
pub struct DataKey {
    aead: LessSafeKey,
    index: hmac::Key,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(…)")
    }
}

impl DataKey {
    /// A key from 32 secret bytes; sealing and indexing use keys derived from them.
    pub fn from_secret(secret: &[u8; 32]) -> DataKey {
        let derive = |label: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), label);
        let enc = derive(b"civichub hotline seal v1");
        let idx = derive(b"civichub hotline index v1");
        // An HMAC-SHA256 tag is 32 bytes, the length AES-256 takes.
        let unbound = UnboundKey::new(&AES_256_GCM, &enc.as_ref()[..32]).unwrap_or_else(|_| unreachable!("32-byte AES-256 key"));
        DataKey { aead: LessSafeKey::new(unbound), index: hmac::Key::new(hmac::HMAC_SHA256, idx.as_ref()) }
    }

    /// A key given as base64 (`--hotline-data-key`).
    pub fn parse(b64: &str) -> Result<DataKey> {
        let bytes = STANDARD.decode(b64.trim()).map_err(|_| Error::Invalid("the hotline data key is not base64".into()))?;
        let secret: [u8; 32] = bytes.try_into().map_err(|_| Error::Invalid("the hotline data key must be 32 bytes (base64)".into()))?;
        Ok(DataKey::from_secret(&secret))
    }

    /// The key in `path`, made (readable by the owner only) if missing.
    pub fn load_or_create(path: &Path) -> Result<DataKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => DataKey::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                SystemRandom::new().fill(&mut secret).map_err(|_| Error::Invalid("no system randomness".into()))?;
                let io = |e: std::io::Error| Error::Invalid(format!("cannot write {}: {e}", path.display()));
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(io)?;
                std::io::Write::write_all(&mut file, STANDARD.encode(secret).as_bytes()).map_err(io)?;
                Ok(DataKey::from_secret(&secret))
            }
            Err(e) => Err(Error::Invalid(format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// `v1:` and base64 of nonce and ciphertext.
    pub fn seal(&self, plain: &str) -> Result<String> {
        let failed = || Error::Invalid("caller data could not be sealed".into());
        let mut nonce = [0u8; NONCE_LEN];
        // Without randomness nothing is sealed: a repeated nonce would expose the key stream.
        SystemRandom::new().fill(&mut nonce).map_err(|_| failed())?;
        let mut data = plain.as_bytes().to_vec();
        self.aead.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data).map_err(|_| failed())?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// The plain text of a sealed value.
    pub fn open(&self, sealed: &str) -> Result<String> {
        let bad = || Error::Invalid("a sealed value could not be opened (wrong hotline data key?)".into());
        let raw = STANDARD.decode(sealed.strip_prefix(PREFIX).ok_or_else(bad)?).map_err(|_| bad())?;
        if raw.len() < NONCE_LEN {
            return Err(bad());
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let mut data = rest.to_vec();
        let plain = self.aead.open_in_place(nonce, Aad::empty(), &mut data).map_err(|_| bad())?;
        String::from_utf8(plain.to_vec()).map_err(|_| bad())
    }

    /// The keyed hash a phone number is found by.
    pub fn index(&self, phone: &str) -> String {
        hmac::sign(&self.index, phone.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let key = DataKey::from_secret(&[7; 32]);
        let sealed = key.seal("13912345678").unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("1391234"));
        assert_ne!(sealed, key.seal("13912345678").unwrap(), "a fresh nonce each time");
        assert_eq!(key.open(&sealed).unwrap(), "13912345678");
        assert!(DataKey::from_secret(&[8; 32]).open(&sealed).is_err());
        assert_eq!(key.index("13912345678"), key.index("13912345678"));
        assert_ne!(key.index("13912345678"), DataKey::from_secret(&[8; 32]).index("13912345678"));
    }

    #[test]
    fn a_key_file_is_made_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let a = DataKey::load_or_create(&path).unwrap();
        let b = DataKey::load_or_create(&path).unwrap();
        assert_eq!(b.open(&a.seal("x").unwrap()).unwrap(), "x");
        assert!(DataKey::parse("too short").is_err());
    }
}
