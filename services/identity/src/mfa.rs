//! Second factors: time-based one-time passwords (TOTP, RFC 6238, as
//! authenticator apps compute them: HMAC-SHA1, 30-second steps, six digits)
//! and ten single-use recovery codes, stored hashed.
//!
//! **Invariant:** a TOTP step is accepted at most once per user: `last_step`
//! only moves forward, by compare-and-set, so a code seen by an onlooker, or
//! sent twice, is refused, on any node.

use civichub_store::{Db, Row, now, random_token, sha256_hex};
use aws_lc_rs::hmac;

use crate::{Error, Result};

/// Seconds per TOTP step.
pub const STEP_SECS: i64 = 30;
/// Steps before and after now a code may come from (clock drift).
const SKEW: i64 = 1;
/// Deletes the recovery codes of `$1` once no second factor is left.
pub(crate) const ORPHAN_RECOVERY_CODES: &str = "DELETE FROM mfa_recovery_codes WHERE user_id = $1 \
     AND NOT EXISTS (SELECT 1 FROM passkeys WHERE user_id = $1) \
     AND NOT EXISTS (SELECT 1 FROM mfa_totp WHERE user_id = $1 AND confirmed = 1)";

/// Recovery codes made at enrolment.
pub const RECOVERY_CODES: usize = 10;

/// HOTP (RFC 4226) of `counter`: six digits.
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let h = tag.as_ref();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let code = (u32::from(h[offset] & 0x7f) << 24) | (u32::from(h[offset + 1]) << 16) | (u32::from(h[offset + 2]) << 8) | u32::from(h[offset + 3]);
    code % 1_000_000
}

/// RFC 4648 base32 without padding, as `otpauth://` URIs carry secrets.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

fn unbase32(s: &str) -> Option<Vec<u8>> {
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in s.chars().filter(|c| *c != '=') {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// A code as typed: six digits, spaces allowed.
fn digits(code: &str) -> Option<u32> {
    let d: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (d.len() == 6 && d.bytes().all(|b| b.is_ascii_digit())).then(|| d.parse().ok()).flatten()
}

/// The step of `code` among those around `now` (Unix seconds), if it matches one.
pub fn matching_step(secret: &[u8], code: &str, now: i64) -> Option<i64> {
    let code = digits(code)?;
    let current = now.div_euclid(STEP_SECS);
    (current - SKEW..=current + SKEW).find(|s| *s >= 0 && hotp(secret, *s as u64) == code)
}

/// What a second factor proved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proof {
    /// A code from the authenticator app.
    Totp,
    /// One of the recovery codes (now used).
    RecoveryCode,
}

/// Users' second factors.
#[derive(Clone, Debug)]
pub struct Mfa {
    db: Db,
}

impl Mfa {
    /// In `db`.
    pub fn new(db: Db) -> Mfa {
        Mfa { db }
    }

    /// Whether `user_id` has a confirmed authenticator app.
    pub async fn enrolled(&self, user_id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT confirmed FROM mfa_totp WHERE user_id = $1").bind(user_id).fetch_optional(self.db.pool()).await?;
        Ok(row.map(|r| r.try_get::<i64, _>("confirmed")).transpose()?.is_some_and(|c| c != 0))
    }

    /// A new secret for `user_id` to scan (base32), replacing one not yet
    /// confirmed; refused while a confirmed one exists.
    pub async fn begin(&self, user_id: &str) -> Result<String> {
        let mut secret = [0u8; 20];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut secret).map_err(|_| Error::Invalid("no randomness".into()))?;
        let encoded = base32(&secret);
        // Only a pending secret is replaced: a confirmed app stays, and this
        // enrolment is refused.
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1 AND confirmed = 0").bind(user_id).execute(&mut *tx).await?;
        let added = sqlx::query(
            "INSERT INTO mfa_totp (user_id, secret, confirmed, last_step, created_at) VALUES ($1, $2, 0, -1, $3) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(&encoded)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if added == 0 {
            return Err(Error::Conflict("an authenticator app is already enrolled".into()));
        }
        Ok(encoded)
    }

    /// The secret waiting for confirmation, to show it again.
    pub async fn pending_secret(&self, user_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT secret FROM mfa_totp WHERE user_id = $1 AND confirmed = 0").bind(user_id).fetch_optional(self.db.pool()).await?;
        Ok(row.map(|r| r.try_get("secret")).transpose()?)
    }

    /// Confirms the pending secret with a code from the app; returns the
    /// recovery codes (shown once, kept hashed), or none for a wrong code.
    pub async fn confirm(&self, user_id: &str, code: &str, at: i64) -> Result<Option<Vec<String>>> {
        let Some(encoded) = self.pending_secret(user_id).await? else { return Ok(None) };
        let Some(secret) = unbase32(&encoded) else { return Ok(None) };
        let Some(step) = matching_step(&secret, code, at) else { return Ok(None) };
        let mut tx = self.db.begin().await?;
        // The secret the code was checked against, not one a second
        // enrolment put in its place meanwhile (never shown to this app).
        let confirmed = sqlx::query("UPDATE mfa_totp SET confirmed = 1, last_step = $2 WHERE user_id = $1 AND confirmed = 0 AND secret = $3")
            .bind(user_id)
            .bind(step)
            .bind(&encoded)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if confirmed != 1 {
            // Confirmed meanwhile (the form sent twice): its recovery codes stand.
            return Ok(None);
        }
        let codes = Self::new_recovery_codes(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(Some(codes))
    }

    /// Ten fresh recovery codes for `user_id`, replacing any before (shown
    /// once, kept hashed): made when a first second factor is enrolled.
    pub async fn issue_recovery_codes(&self, user_id: &str) -> Result<Vec<String>> {
        let mut tx = self.db.begin().await?;
        let codes = Self::new_recovery_codes(&mut tx, user_id).await?;
        tx.commit().await?;
        Ok(codes)
    }

    async fn new_recovery_codes(tx: &mut civichub_store::Tx, user_id: &str) -> Result<Vec<String>> {
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| random_token(8).to_lowercase().chars().filter(char::is_ascii_alphanumeric).take(10).collect()).collect();
        sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
        for c in &codes {
            sqlx::query("INSERT INTO mfa_recovery_codes (user_id, code_hash, used_at) VALUES ($1, $2, NULL)").bind(user_id).bind(sha256_hex(c)).execute(&mut **tx).await?;
        }
        Ok(codes)
    }

    /// Checks a typed second factor: a TOTP code of a step not used before,
    /// or an unused recovery code (used up by this).
    pub async fn verify(&self, user_id: &str, code: &str, at: i64) -> Result<Option<Proof>> {
        let row = sqlx::query("SELECT secret FROM mfa_totp WHERE user_id = $1 AND confirmed = 1").bind(user_id).fetch_optional(self.db.pool()).await?;
        let secret = row.map(|r| r.try_get::<String, _>("secret")).transpose()?.and_then(|s| unbase32(&s));
        if let Some(step) = secret.and_then(|secret| matching_step(&secret, code, at)) {
            let moved = sqlx::query("UPDATE mfa_totp SET last_step = $2 WHERE user_id = $1 AND last_step < $2")
                .bind(user_id)
                .bind(step)
                .execute(self.db.pool())
                .await?
                .rows_affected();
            return Ok((moved == 1).then_some(Proof::Totp));
        }
        let typed: String = code.chars().filter(|c| !c.is_whitespace() && *c != '-').collect::<String>().to_lowercase();
        let used = sqlx::query("UPDATE mfa_recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL")
            .bind(user_id)
            .bind(sha256_hex(&typed))
            .bind(at)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok((used == 1).then_some(Proof::RecoveryCode))
    }

    /// Recovery codes not used yet.
    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL").bind(user_id).fetch_one(self.db.pool()).await?;
        Ok(row.try_get("n")?)
    }

    /// Everyone's second factors, for the admin's user list: per user id,
    /// whether they have a confirmed authenticator app and how many passkeys.
    pub async fn summary(&self) -> Result<std::collections::HashMap<String, (bool, i64)>> {
        let mut all = std::collections::HashMap::<String, (bool, i64)>::new();
        for row in sqlx::query("SELECT user_id FROM mfa_totp WHERE confirmed = 1").fetch_all(self.db.pool()).await? {
            all.entry(row.try_get("user_id")?).or_default().0 = true;
        }
        for row in sqlx::query("SELECT user_id, COUNT(*) AS n FROM passkeys GROUP BY user_id").fetch_all(self.db.pool()).await? {
            all.entry(row.try_get("user_id")?).or_default().1 = row.try_get("n")?;
        }
        Ok(all)
    }

    /// Removes the authenticator app of `user_id`; the recovery codes go too
    /// unless a passkey remains.
    pub async fn remove_totp(&self, user_id: &str) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let n = sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?.rows_affected();
        sqlx::query(ORPHAN_RECOVERY_CODES).bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Removes every second factor of `user_id` (authenticator app, passkeys
    /// and recovery codes); whether there was one.
    pub async fn reset(&self, user_id: &str) -> Result<bool> {
        let mut tx = self.db.begin().await?;
        let n = sqlx::query("DELETE FROM mfa_totp WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?.rows_affected();
        let passkeys = sqlx::query("DELETE FROM passkeys WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?.rows_affected();
        sqlx::query("DELETE FROM mfa_recovery_codes WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(n + passkeys > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA-1, the last six digits.
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, expected) in [(59, 287_082), (1_111_111_109, 81_804), (1_111_111_111, 50_471), (1_234_567_890, 5_924), (2_000_000_000, 279_037)] {
            assert_eq!(hotp(secret, (time / 30) as u64), expected, "T = {time}");
        }
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(unbase32("MZXW6YTBOI").unwrap(), b"foobar");
        assert_eq!(unbase32("mzxw6ytboi======").unwrap(), b"foobar");
        assert!(unbase32("1!").is_none());
    }

    #[test]
    fn codes_from_one_step_either_side_match_and_no_further() {
        let secret = b"12345678901234567890";
        let at = 1_111_111_109;
        let step = at / 30;
        for (delta, ok) in [(-2, false), (-1, true), (0, true), (1, true), (2, false)] {
            let code = format!("{:06}", hotp(secret, (step + delta) as u64));
            assert_eq!(matching_step(secret, &code, at).is_some(), ok, "step {delta:+}");
        }
        assert_eq!(matching_step(secret, "081 804", at), Some(step), "spaces are allowed");
        assert_eq!(matching_step(secret, "81804", at), None, "six digits");
    }
}

/// `amr` once a second factor given as `method` (`otp`, `hwk`, `swk`)
/// completes a login that had `before`: the method and `mfa`, each once.
pub(crate) fn with_second_factor(before: &[String], method: &str) -> Vec<String> {
    let mut amr: Vec<String> = before.iter().filter(|m| *m != "mfa" && *m != method).cloned().collect();
    amr.extend([method.to_owned(), "mfa".to_owned()]);
    amr
}

/// How long a login may wait for its second factor.
const PENDING_SECS: i64 = 300;

/// A login waiting for its second factor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Whose.
    pub user_id: String,
    /// How the first factor was given.
    pub amr: Vec<String>,
    /// The live session to raise (step-up), or none for a new login.
    pub session_id: Option<String>,
    /// Where to go afterwards.
    pub return_to: String,
    /// An upstream account waiting to be linked once the login completes
    /// (the key [`crate::Federation`] parked it under).
    pub link: Option<String>,
}

impl Mfa {
    /// Keeps a login waiting for its second factor; the key its page carries.
    pub async fn park(&self, pending: &Pending) -> Result<String> {
        let id = random_token(24);
        sqlx::query("INSERT INTO mfa_pending (id, user_id, amr, session_id, return_to, expires_at, link) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&id)
            .bind(&pending.user_id)
            .bind(pending.amr.join(" "))
            .bind(&pending.session_id)
            .bind(&pending.return_to)
            .bind(now() + PENDING_SECS)
            .bind(&pending.link)
            .execute(self.db.pool())
            .await?;
        Ok(id)
    }

    /// The login waiting under `key`, if it has not expired.
    pub async fn pending(&self, key: &str) -> Result<Option<Pending>> {
        let row = sqlx::query("SELECT user_id, amr, session_id, return_to, link FROM mfa_pending WHERE id = $1 AND expires_at >= $2")
            .bind(key)
            .bind(now())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| {
            Ok(Pending {
                user_id: r.try_get("user_id")?,
                amr: r.try_get::<String, _>("amr")?.split_whitespace().map(str::to_owned).collect(),
                session_id: r.try_get("session_id")?,
                return_to: r.try_get("return_to")?,
                link: r.try_get("link")?,
            })
        })
        .transpose()
    }

    /// Ends the wait under `key` (once); whether it was there.
    pub async fn finish(&self, key: &str) -> Result<bool> {
        Ok(sqlx::query("DELETE FROM mfa_pending WHERE id = $1").bind(key).execute(self.db.pool()).await?.rows_affected() == 1)
    }
}
