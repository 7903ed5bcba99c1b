//! Password hashing with argon2id in PHC strings, on the blocking pool.

use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, PasswordHasher, Version};
use subtle::ConstantTimeEq;

use crate::values::Password;
use crate::{Error, Result};

/// The argon2id parameters new hashes use: OWASP's m=19456 KiB, t=2, p=1.
pub fn current_params() -> Params {
    Params::new(19 * 1024, 2, 1, None).unwrap_or(Params::DEFAULT)
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, current_params())
}

/// What a password check found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right; `rehash` says the stored hash uses older parameters.
    Match {
        /// Whether to store a new hash with the current parameters.
        rehash: bool,
    },
    /// The password is wrong.
    Mismatch,
}

/// Hashes a password (CPU-heavy: call from the blocking pool).
pub fn hash_blocking(password: &Password) -> Result<String> {
    hasher()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Crypto(e.to_string()))
}

thread_local! {
    /// argon2's working memory, kept per thread between computations: a fresh
    /// 19 MiB allocation each time costs thousands of page faults.
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Checks a password against a PHC string (CPU-heavy: run it on a worker).
pub fn verify_blocking(stored: &str, password: &Password) -> Verdict {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verdict::Mismatch;
    };
    let (Ok(params), Some(salt), Some(expected)) = (Params::try_from(&parsed), parsed.salt.as_ref(), parsed.hash.as_ref()) else {
        return Verdict::Mismatch;
    };
    let Ok(algorithm) = parsed.algorithm.as_str().parse::<Algorithm>() else {
        return Verdict::Mismatch;
    };
    let version = match parsed.version{
        None | Some(0x13) => Version::V0x13,
        Some(0x10) => Version::V0x10,
        Some(_) => return Verdict::Mismatch,
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let computed = MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        let blocks = params.block_count();
        if memory.len() < blocks {
            memory.resize(blocks, Block::new());
        }
        argon.hash_password_into_with_memory(password.expose().as_bytes(), salt.as_ref(), &mut out, &mut memory[..blocks])
    });
    if computed.is_err() || !bool::from(out.as_slice().ct_eq(expected.as_bytes())) {
        return Verdict::Mismatch;
    }
    let want = current_params();
    let rehash = algorithm != Algorithm::Argon2id
        || version != Version::V0x13
        || params.m_cost() < want.m_cost()
        || params.t_cost() < want.t_cost()
        || params.p_cost() < want.p_cost();
    Verdict::Match { rehash }
}

type Job = Box<dyn FnOnce() + Send>;

/// argon2 runs on a fixed set of threads, one per core: more would not go
/// faster, and each computation takes 19 MiB that a fixed thread reuses
/// instead of leaving it with whichever blocking thread ran last.
fn workers() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<Job>> {
    static WORKERS: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    WORKERS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        for i in 0..cores {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("civichub-argon2-{i}")).spawn(move || loop {
                let job = match rx.lock() {
                    Ok(guard) => guard.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
            if let Err(e) = spawned {
                tracing::error!("cannot start an argon2 worker: {e}");
            }
        }
        std::sync::Mutex::new(tx)
    })
}

async fn on_worker<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    workers()
        .lock()
        .map_err(|_| Error::Crypto("argon2 workers are gone".into()))?
        .send(job)
        .map_err(|_| Error::Crypto("argon2 workers are gone".into()))?;
    rx.await.map_err(|_| Error::Crypto("argon2 worker stopped".into()))
}

/// [`hash_blocking`] on an argon2 worker.
pub async fn hash(password: Password) -> Result<String> {
    on_worker(move || hash_blocking(&password)).await?
}

/// [`verify_blocking`] on an argon2 worker. With no stored hash (unknown
/// user) it still spends the same work, so timing does not reveal accounts.
pub async fn verify(stored: Option<String>, password: Password) -> Verdict {
    on_worker(move || match stored {
        Some(stored) => verify_blocking(&stored, &password),
        None => {
            let _ = verify_blocking(dummy_hash(), &password);
            Verdict::Mismatch
        }
    })
    .await
    .unwrap_or(Verdict::Mismatch)
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_blocking(&Password::attempt("civichub-timing-equaliser".into())).unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_with_owasp_parameters() {
        let h = hash_blocking(&Password::attempt("correct horse".into())).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert_eq!(verify_blocking(&h, &Password::attempt("correct horse".into())), Verdict::Match { rehash: false });
        assert_eq!(verify_blocking(&h, &Password::attempt("wrong".into())), Verdict::Mismatch);
    }

    #[test]
    fn weaker_hashes_ask_for_a_rehash() {
        let weak = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(8 * 1024, 1, 1, None).unwrap())
            .hash_password(b"pw-123456")
            .unwrap()
            .to_string();
        assert_eq!(verify_blocking(&weak, &Password::attempt("pw-123456".into())), Verdict::Match { rehash: true });
    }
}
