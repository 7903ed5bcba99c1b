//! Event callbacks (directory changes DingTalk pushes to us): signature check,
//! decryption, and the encrypted reply.
//!
//! DingTalk calls the registered URL with query `msg_signature` (older apps:
//! `signature`), `timeStamp` (or `timestamp`) and `nonce`, and a body
//! `{"encrypt": "…"}`. The signature is the SHA-1 hex of the sorted concatenation
//! of token, timestamp, nonce and `encrypt`. `encrypt` is Base64 of AES-256-CBC
//! (key = Base64-decode(EncodingAESKey + "="), IV = first 16 bytes of the key) over
//! 16 random bytes + 4-byte big-endian length + message + owner key (corpId, or the
//! appKey for event subscriptions), padded PKCS#7-style to a multiple of **32**
//! bytes (pad values 1–32), as DingTalk's own libraries do. The answer to every
//! event, including the first `check_url`, is the encrypted text `success`.

use aes::Aes256;
use base64::Engine;
use base64::alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand::Rng;
use serde::Serialize;
use serde_json::Value;
use sha1::{Digest, Sha1};

use crate::error::{Error, Result};

/// The padding block DingTalk uses (not AES's 16).
const PAD_BLOCK: usize = 32;
/// Largest `encrypt` accepted, in Base64 characters.
const MAX_ENCRYPT_LEN: usize = 1 << 20;

/// Base64 that, like Java's decoder, ignores non-zero trailing bits: an
/// EncodingAESKey is 43 arbitrary Base64 characters, so its last one rarely ends
/// in zero bits.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true));

/// Signs, verifies, encrypts and decrypts the event callbacks of one app.
#[derive(Clone)]
pub struct CallbackCrypto {
    token: String,
    key: [u8; 32],
    owner_key: String,
}

impl std::fmt::Debug for CallbackCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackCrypto").field("owner_key", &self.owner_key).finish_non_exhaustive()
    }
}

/// The encrypted answer to an event: serialise it as the JSON body of the reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EncryptedReply {
    /// Signature over token, timestamp, nonce and `encrypt`.
    pub msg_signature: String,
    /// Milliseconds since the epoch, as text.
    #[serde(rename = "timeStamp")]
    pub time_stamp: String,
    /// Random text.
    pub nonce: String,
    /// The encrypted message.
    pub encrypt: String,
}

impl CallbackCrypto {
    /// The crypto of an app with callback `token`, the 43-character
    /// `encoding_aes_key`, and `owner_key` (corpId for an enterprise app's callback
    /// registration, appKey for its event subscription).
    pub fn new(token: impl Into<String>, encoding_aes_key: &str, owner_key: impl Into<String>) -> Result<CallbackCrypto> {
        if encoding_aes_key.len() != 43 {
            return Err(Error::Invalid(format!("EncodingAESKey must be 43 characters, not {}", encoding_aes_key.len())));
        }
        let bytes = LENIENT_BASE64.decode(format!("{encoding_aes_key}=")).map_err(|e| Error::Invalid(format!("EncodingAESKey is not Base64: {e}")))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| Error::Invalid("EncodingAESKey does not decode to 32 bytes".into()))?;
        Ok(CallbackCrypto { token: token.into(), key, owner_key: owner_key.into() })
    }

    /// SHA-1 hex of the sorted concatenation of token, `timestamp`, `nonce` and `encrypt`.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypt: &str) -> String {
        let mut parts = [self.token.as_str(), timestamp, nonce, encrypt];
        parts.sort_unstable();
        let digest = Sha1::digest(parts.concat().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks `msg_signature` (compared in constant time, case-insensitively).
    pub fn verify(&self, msg_signature: &str, timestamp: &str, nonce: &str, encrypt: &str) -> Result<()> {
        let expected = self.signature(timestamp, nonce, encrypt);
        let given = msg_signature.to_ascii_lowercase();
        let same = expected.len() == given.len() && expected.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same { Ok(()) } else { Err(Error::Callback("signature mismatch".into())) }
    }

    /// Verifies and decrypts one callback: the event's JSON text.
    pub fn decrypt_event(&self, msg_signature: &str, timestamp: &str, nonce: &str, encrypt: &str) -> Result<String> {
        self.verify(msg_signature, timestamp, nonce, encrypt)?;
        self.decrypt(encrypt)
    }

    /// Decrypts `encrypt` and checks that it was meant for this owner key.
    pub fn decrypt(&self, encrypt: &str) -> Result<String> {
        if encrypt.len() > MAX_ENCRYPT_LEN {
            return Err(Error::Callback("encrypted message too large".into()));
        }
        let mut data = LENIENT_BASE64.decode(encrypt.trim()).map_err(|e| Error::Callback(format!("encrypt is not Base64: {e}")))?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(Error::Callback(format!("ciphertext of {} bytes is not whole AES blocks", data.len())));
        }
        let cipher = cbc::Decryptor::<Aes256>::new_from_slices(&self.key, &self.key[..16]).map_err(|e| Error::Callback(e.to_string()))?;
        let plain = cipher.decrypt_padded_mut::<NoPadding>(&mut data).map_err(|e| Error::Callback(format!("decryption failed: {e}")))?;
        let pad = usize::from(plain.last().copied().unwrap_or(0));
        if pad == 0 || pad > PAD_BLOCK || pad > plain.len() || plain[plain.len() - pad..].iter().any(|b| usize::from(*b) != pad) {
            return Err(Error::Callback("bad padding (wrong EncodingAESKey?)".into()));
        }
        let content = &plain[..plain.len() - pad];
        let Some(len_bytes) = content.get(16..20) else {
            return Err(Error::Callback("decrypted message too short".into()));
        };
        let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
        let Some((msg, owner)) = 20usize.checked_add(len).and_then(|end| Some((content.get(20..end)?, content.get(end..)?))) else {
            return Err(Error::Callback("decrypted length field exceeds the message".into()));
        };
        if owner != self.owner_key.as_bytes() {
            return Err(Error::Callback(format!("message is for owner key {:?}, not this app", String::from_utf8_lossy(owner))));
        }
        String::from_utf8(msg.to_vec()).map_err(|_| Error::Callback("decrypted message is not UTF-8".into()))
    }

    /// Encrypts `msg` with fresh random bytes.
    pub fn encrypt(&self, msg: &str) -> Result<String> {
        self.encrypt_with_random(rand::thread_rng().r#gen(), msg)
    }

    /// Encrypts `msg` with the given 16 leading random bytes (deterministic: for tests).
    pub fn encrypt_with_random(&self, random: [u8; 16], msg: &str) -> Result<String> {
        let len = u32::try_from(msg.len()).map_err(|_| Error::Invalid("message too large to encrypt".into()))?;
        let mut data = Vec::with_capacity(msg.len() + self.owner_key.len() + 20 + PAD_BLOCK);
        data.extend_from_slice(&random);
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(msg.as_bytes());
        data.extend_from_slice(self.owner_key.as_bytes());
        let pad = PAD_BLOCK - data.len() % PAD_BLOCK;
        data.resize(data.len() + pad, pad as u8);
        let n = data.len();
        let cipher = cbc::Encryptor::<Aes256>::new_from_slices(&self.key, &self.key[..16]).map_err(|e| Error::Callback(e.to_string()))?;
        let out = cipher.encrypt_padded_mut::<NoPadding>(&mut data, n).map_err(|e| Error::Callback(format!("encryption failed: {e}")))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// The encrypted, signed reply carrying `msg` with the given timestamp and nonce.
    pub fn reply_with(&self, msg: &str, time_stamp: &str, nonce: &str) -> Result<EncryptedReply> {
        let encrypt = self.encrypt(msg)?;
        let msg_signature = self.signature(time_stamp, nonce, &encrypt);
        Ok(EncryptedReply { msg_signature, time_stamp: time_stamp.into(), nonce: nonce.into(), encrypt })
    }

    /// The reply DingTalk expects to every event: the encrypted text `success`.
    pub fn success_reply(&self) -> Result<EncryptedReply> {
        let time_stamp = chrono::Utc::now().timestamp_millis().to_string();
        let nonce: String = rand::thread_rng().sample_iter(rand::distributions::Alphanumeric).take(16).map(char::from).collect();
        self.reply_with("success", &time_stamp, &nonce)
    }
}

/// A decrypted directory event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackEvent {
    /// `EventType`, e.g. `check_url`, `user_add_org`, `org_dept_remove`.
    pub event_type: String,
    /// `UserId`: the users concerned (user events).
    pub user_ids: Vec<String>,
    /// `DeptId`: the departments concerned (department events).
    pub dept_ids: Vec<i64>,
    /// `CorpId`, when present.
    pub corp_id: Option<String>,
    /// The whole event.
    pub raw: Value,
}

impl CallbackEvent {
    /// Reads a decrypted event.
    pub fn parse(json: &str) -> Result<CallbackEvent> {
        let raw: Value = serde_json::from_str(json).map_err(|e| Error::Callback(format!("event is not JSON: {e}")))?;
        let event_type = raw.get("EventType").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| Error::Callback("event has no EventType".into()))?.to_owned();
        let list = |name: &str| raw.get(name).and_then(Value::as_array).cloned().unwrap_or_default();
        let user_ids = list("UserId").iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        let dept_ids = list("DeptId").iter().filter_map(crate::transport::as_i64).collect();
        let corp_id = raw.get("CorpId").and_then(Value::as_str).map(str::to_owned);
        Ok(CallbackEvent { event_type, user_ids, dept_ids, corp_id, raw })
    }

    /// Whether this is the URL check DingTalk sends when the callback is registered.
    pub fn is_check_url(&self) -> bool {
        self.event_type == "check_url"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AES_KEY: &str = "QkPCXgGsnTRGXsl400XZ8hxdmODnk891tcoqIyuVKmB";

    fn crypto() -> CallbackCrypto {
        CallbackCrypto::new("tok3n", AES_KEY, "dingcorp123").expect("valid key")
    }

    #[test]
    fn round_trip() {
        let c = crypto();
        for msg in ["", "success", r#"{"EventType":"check_url"}"#, &"长消息".repeat(100)] {
            let enc = c.encrypt(msg).expect("encrypts");
            assert_eq!(c.decrypt(&enc).expect("decrypts"), msg);
        }
        let reply = c.success_reply().expect("reply");
        c.verify(&reply.msg_signature, &reply.time_stamp, &reply.nonce, &reply.encrypt).expect("signed");
        assert_eq!(c.decrypt(&reply.encrypt).expect("decrypts"), "success");
        let json = serde_json::to_value(&reply).expect("serialises");
        assert!(json.get("timeStamp").is_some() && json.get("msg_signature").is_some());
    }

    /// A vector computed independently with Python 3 (`cryptography` 48 for AES-CBC,
    /// `hashlib` for SHA-1, `base64.b64decode` for the key, which like Java ignores the
    /// key's trailing bits):
    ///
    /// ```python
    /// key = base64.b64decode(AES_KEY + "=")
    /// msg = b'{"EventType":"check_url"}'
    /// plain = bytes(range(16)) + struct.pack(">I", len(msg)) + msg + b"dingcorp123"
    /// pad = 32 - len(plain) % 32; plain += bytes([pad]) * pad
    /// enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    /// ct = base64.b64encode(enc.update(plain) + enc.finalize()).decode()
    /// sig = hashlib.sha1("".join(sorted(["tok3n", "1700000000000", "nonce123", ct])).encode()).hexdigest()
    /// ```
    #[test]
    fn matches_independent_vector() {
        const CT: &str = "lYvqDK9FIMnraI6/ftPq8LFD8aIZ2cuXJM7wqQDya2fgQMZXssTqyYstHF4cChSIkt4v5QdEvwu0okk7f5IMdw==";
        const SIG: &str = "de2df707be65df1bf325ae7428477dd05a38f8e8";
        let c = crypto();
        let random: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(c.encrypt_with_random(random, r#"{"EventType":"check_url"}"#).expect("encrypts"), CT);
        assert_eq!(c.signature("1700000000000", "nonce123", CT), SIG);
        assert_eq!(c.decrypt_event(SIG, "1700000000000", "nonce123", CT).expect("decrypts"), r#"{"EventType":"check_url"}"#);
    }

    #[test]
    fn padding_is_to_32_bytes() {
        // 16 + 4 + 7 ("success") + 11 ("dingcorp123") = 38 bytes → padded to 64, never 48.
        let enc = crypto().encrypt("success").expect("encrypts");
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(enc).expect("b64").len(), 64);
    }

    #[test]
    fn rejects_tampering_and_other_owners() {
        let c = crypto();
        let enc = c.encrypt("hello").expect("encrypts");
        let other = CallbackCrypto::new("tok3n", AES_KEY, "someone-else").expect("valid key");
        assert!(other.decrypt(&enc).expect_err("wrong owner").to_string().contains("owner key"));
        assert!(c.decrypt("not base64!").is_err());
        assert!(c.decrypt("").is_err());
        assert!(c.decrypt("AAAA").is_err());
        let sig = c.signature("1", "n", &enc);
        assert!(c.decrypt_event(&sig, "1", "n", &enc).is_ok());
        assert!(c.decrypt_event(&sig, "2", "n", &enc).is_err());
        assert!(c.verify(&sig.to_uppercase(), "1", "n", &enc).is_ok());
        assert!(c.verify("", "1", "n", &enc).is_err());
        // A wrong key yields garbage: bad padding or wrong owner, never a panic.
        let wrong = CallbackCrypto::new("tok3n", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ", "dingcorp123").expect("valid key");
        assert!(wrong.decrypt(&enc).is_err());
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(CallbackCrypto::new("t", "short", "o").is_err());
        assert!(CallbackCrypto::new("t", &"!".repeat(43), "o").is_err());
    }

    #[test]
    fn parses_events() {
        let e = CallbackEvent::parse(r#"{"EventType":"user_add_org","UserId":["u1","u2"],"CorpId":"dingc","TimeStamp":"1"}"#).expect("parses");
        assert_eq!(e.user_ids, ["u1", "u2"]);
        assert_eq!(e.corp_id.as_deref(), Some("dingc"));
        let e = CallbackEvent::parse(r#"{"EventType":"org_dept_remove","DeptId":[5,"6"]}"#).expect("parses");
        assert_eq!(e.dept_ids, [5, 6]);
        assert!(CallbackEvent::parse(r#"{"EventType":"check_url"}"#).expect("parses").is_check_url());
        assert!(CallbackEvent::parse("{}").is_err());
        assert!(CallbackEvent::parse("[").is_err());
    }
}
