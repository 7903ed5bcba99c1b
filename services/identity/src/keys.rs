//! Signing keys: generated at first start, kept in the database, rotated by
//! `civichub keys rotate`, and published in the JWKS while tokens they signed
//! may still be alive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use civichub_store::{Db, Row, now, random_token};
use openidconnect::core::{
    CoreJsonCurveType, CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey,
};
use openidconnect::{JsonWebKeyId, PrivateSigningKey, SigningError};
use p256::ecdsa::signature::Signer;
use rsa::pkcs1::{EncodeRsaPrivateKey, LineEnding};
use tokio::sync::RwLock;

use crate::values::SigningAlg;
use crate::{Error, Result};

/// How long a superseded key stays published: longer than any token it signed lives.
pub const RETIRED_KEY_PUBLISHED_SECS: i64 = 24 * 3600;

/// An ECDSA P-256 signing key, for ES256 ID tokens.
pub struct EcP256Key {
    key: p256::ecdsa::SigningKey,
    kid: JsonWebKeyId,
}

impl EcP256Key {
    fn generate(kid: &str) -> Self {
        loop {
            let bytes = random_bytes::<32>();
            if let Ok(key) = p256::ecdsa::SigningKey::from_slice(&bytes) {
                return EcP256Key { key, kid: JsonWebKeyId::new(kid.to_owned()) };
            }
        }
    }

    fn from_stored(stored: &str, kid: &str) -> Result<Self> {
        let bytes = STANDARD.decode(stored).map_err(|e| Error::Corrupt(format!("EC key {kid}: {e}")))?;
        let key = p256::ecdsa::SigningKey::from_slice(&bytes).map_err(|e| Error::Corrupt(format!("EC key {kid}: {e}")))?;
        Ok(EcP256Key { key, kid: JsonWebKeyId::new(kid.to_owned()) })
    }

    fn to_stored(&self) -> String {
        STANDARD.encode(self.key.to_bytes())
    }
}

impl PrivateSigningKey for EcP256Key {
    type VerificationKey = CoreJsonWebKey;

    fn sign(&self, alg: &CoreJwsSigningAlgorithm, message: &[u8]) -> std::result::Result<Vec<u8>, SigningError> {
        if *alg != CoreJwsSigningAlgorithm::EcdsaP256Sha256 {
            return Err(SigningError::UnsupportedAlg(format!("{alg:?}")));
        }
        let signature: p256::ecdsa::Signature = self.key.sign(message);
        Ok(signature.to_bytes().to_vec())
    }

    fn as_verification_key(&self) -> CoreJsonWebKey {
        let point = self.key.verifying_key().to_sec1_point(false);
        let x = point.x().map(|x| x.to_vec()).unwrap_or_default();
        let y = point.y().map(|y| y.to_vec()).unwrap_or_default();
        CoreJsonWebKey::new_ec(x, y, CoreJsonCurveType::P256, Some(self.kid.clone()))
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// An RSA signing key, signing with AWS-LC (`aws-lc-rs`: several times
/// faster than the pure-Rust `rsa` crate that `openidconnect`'s own RSA key
/// uses, and about twice as fast as `ring`).
pub struct RsaKey {
    pair: aws_lc_rs::signature::RsaKeyPair,
    jwk: CoreJsonWebKey,
    rng: aws_lc_rs::rand::SystemRandom,
}

impl RsaKey {
    fn from_pkcs1_pem(pem: &str, kid: &str) -> Result<Self> {
        use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
        let corrupt = |e: String| Error::Corrupt(format!("RSA key {kid}: {e}"));
        let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| corrupt(e.to_string()))?;
        let der = key.to_pkcs1_der().map_err(|e| corrupt(e.to_string()))?;
        let pair = aws_lc_rs::signature::RsaKeyPair::from_der(der.as_bytes()).map_err(|e| corrupt(e.to_string()))?;
        // The published key comes from openidconnect's own type, so the JWK is
        // exactly what its verifiers expect.
        let jwk = CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new(kid.to_owned())))
            .map_err(corrupt)?
            .as_verification_key();
        Ok(RsaKey { pair, jwk, rng: aws_lc_rs::rand::SystemRandom::new() })
    }
}

impl PrivateSigningKey for RsaKey {
    type VerificationKey = CoreJsonWebKey;

    fn sign(&self, alg: &CoreJwsSigningAlgorithm, message: &[u8]) -> std::result::Result<Vec<u8>, SigningError> {
        if *alg != CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256 {
            return Err(SigningError::UnsupportedAlg(format!("{alg:?}")));
        }
        let mut signature = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
            .map_err(|_| SigningError::CryptoError)?;
        Ok(signature)
    }

    fn as_verification_key(&self) -> CoreJsonWebKey {
        self.jwk.clone()
    }
}

/// A signing key of either algorithm.
pub enum SigningKey {
    /// RS256.
    Rsa(RsaKey),
    /// ES256.
    Ec(EcP256Key),
}

impl PrivateSigningKey for SigningKey {
    type VerificationKey = CoreJsonWebKey;

    fn sign(&self, alg: &CoreJwsSigningAlgorithm, message: &[u8]) -> std::result::Result<Vec<u8>, SigningError> {
        match self {
            SigningKey::Rsa(k) => k.sign(alg, message),
            SigningKey::Ec(k) => k.sign(alg, message),
        }
    }

    fn as_verification_key(&self) -> CoreJsonWebKey {
        match self {
            SigningKey::Rsa(k) => k.as_verification_key(),
            SigningKey::Ec(k) => k.as_verification_key(),
        }
    }
}

/// A key loaded from the database.
pub struct LoadedKey {
    /// Key id, the JWS `kid`.
    pub kid: String,
    /// Algorithm.
    pub alg: SigningAlg,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// The key.
    pub key: SigningKey,
}

impl LoadedKey {
    /// The JOSE algorithm to sign with.
    pub fn jws_alg(&self) -> CoreJwsSigningAlgorithm {
        match self.alg {
            SigningAlg::Rs256 => CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            SigningAlg::Es256 => CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        }
    }
}

type Cache = (Instant, Arc<Vec<Arc<LoadedKey>>>);

/// The signing keys, cached in memory and reloaded from the database every
/// few seconds so a rotation on any node reaches every node.
pub struct Keys {
    db: Db,
    cache: RwLock<Option<Cache>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys")
    }
}

const CACHE_TTL: Duration = Duration::from_secs(5);

impl Keys {
    /// The keys in `db`.
    pub fn new(db: Db) -> Self {
        Keys { db, cache: RwLock::new(None) }
    }

    /// Makes sure one key of each algorithm exists (first start).
    pub async fn ensure(&self) -> Result<()> {
        for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM signing_keys WHERE alg = $1")
                .bind(alg.as_str())
                .fetch_one(self.db.pool())
                .await?;
            if row.try_get::<i64, _>("n")? == 0 {
                self.add(alg).await?;
            }
        }
        Ok(())
    }

    /// Adds a new key of each algorithm; new tokens are signed with them at
    /// once, and the previous keys stay published until what they signed expires.
    pub async fn rotate(&self) -> Result<Vec<String>> {
        let mut kids = Vec::new();
        for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
            kids.push(self.add(alg).await?);
        }
        *self.cache.write().await = None;
        Ok(kids)
    }

    async fn add(&self, alg: SigningAlg) -> Result<String> {
        let kid = random_token(12);
        let material = {
            let kid = kid.clone();
            tokio::task::spawn_blocking(move || -> Result<String> {
                match alg {
                    SigningAlg::Rs256 => {
                        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
                            .map_err(|e| Error::Crypto(e.to_string()))?;
                        let pem = key.to_pkcs1_pem(LineEnding::LF).map_err(|e| Error::Crypto(e.to_string()))?;
                        Ok(pem.to_string())
                    }
                    SigningAlg::Es256 => Ok(EcP256Key::generate(&kid).to_stored()),
                }
            })
            .await
            .map_err(|e| Error::Crypto(e.to_string()))??
        };
        // Created strictly after every existing key, so "newest" is unambiguous.
        let latest = sqlx::query("SELECT MAX(created_at) AS m FROM signing_keys")
            .fetch_one(self.db.pool())
            .await?
            .try_get::<Option<i64>, _>("m")?
            .unwrap_or(0);
        let created_at = now().max(latest + 1);
        sqlx::query("INSERT INTO signing_keys (kid, alg, private_key, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&kid)
            .bind(alg.as_str())
            .bind(material)
            .bind(created_at)
            .execute(self.db.pool())
            .await?;
        Ok(kid)
    }

    async fn load(&self) -> Result<Arc<Vec<Arc<LoadedKey>>>> {
        if let Some((at, keys)) = self.cache.read().await.as_ref()
            && at.elapsed() < CACHE_TTL {
                return Ok(keys.clone());
            }
        let rows = sqlx::query("SELECT kid, alg, private_key, created_at FROM signing_keys ORDER BY created_at DESC")
            .fetch_all(self.db.pool())
            .await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in rows {
            let kid: String = row.try_get("kid")?;
            let alg: SigningAlg = row.try_get::<String, _>("alg")?.parse()?;
            let material: String = row.try_get("private_key")?;
            let key = match alg {
                SigningAlg::Rs256 => SigningKey::Rsa(RsaKey::from_pkcs1_pem(&material, &kid)?),
                SigningAlg::Es256 => SigningKey::Ec(EcP256Key::from_stored(&material, &kid)?),
            };
            keys.push(Arc::new(LoadedKey { kid, alg, created_at: row.try_get("created_at")?, key }));
        }
        let keys = Arc::new(keys);
        *self.cache.write().await = Some((Instant::now(), keys.clone()));
        Ok(keys)
    }

    /// The newest key of `alg`, the one new tokens are signed with.
    pub async fn signing_key(&self, alg: SigningAlg) -> Result<Arc<LoadedKey>> {
        let keys = self.load().await?;
        keys.iter()
            .find(|k| k.alg == alg)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("{} signing key", alg.as_str())))
    }

    /// The keys relying parties may verify with: the newest of each algorithm,
    /// and older ones until [`RETIRED_KEY_PUBLISHED_SECS`] after their successor appeared.
    pub async fn published(&self) -> Result<Vec<Arc<LoadedKey>>> {
        let keys = self.load().await?;
        let now = now();
        let mut out = Vec::new();
        for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
            let mut successor: Option<i64> = None;
            for key in keys.iter().filter(|k| k.alg == alg) {
                match successor {
                    None => out.push(key.clone()),
                    Some(next) if now < next + RETIRED_KEY_PUBLISHED_SECS => out.push(key.clone()),
                    Some(_) => {}
                }
                successor = Some(key.created_at);
            }
        }
        Ok(out)
    }

    /// The JSON Web Key Set of the published keys.
    pub async fn jwks(&self) -> Result<CoreJsonWebKeySet> {
        let keys = self.published().await?;
        Ok(CoreJsonWebKeySet::new(keys.iter().map(|k| k.key.as_verification_key()).collect()))
    }

    /// Forgets the cache, so the next use reads the database.
    pub async fn invalidate(&self) {
        *self.cache.write().await = None;
    }
}
