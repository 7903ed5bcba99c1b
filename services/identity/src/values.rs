//! Domain values, parsed once at the edge ("parse, don't validate").

use std::fmt;
use std::str::FromStr;

use url::Url;

use crate::{Error, Result};

/// A login name: 1–64 characters of letters, digits and `. _ - @`, kept in
/// lower case so `Alice` and `alice` are one account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Username(String);

impl FromStr for Username {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        // Checked as stored (lower case): a name whose lower case gains a
        // mark (İ becomes i and a combining dot) would not parse back.
        let lower = s.to_lowercase();
        let ok = !lower.is_empty()
            && lower.chars().count() <= 64
            && lower.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if ok {
            Ok(Username(lower))
        } else {
            Err(Error::Invalid(format!(
                "invalid username {s:?}: use 1-64 letters, digits or . _ - @"
            )))
        }
    }
}

impl Username {
    /// The name as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client id: 1–128 unreserved URL characters, so it needs no encoding in
/// HTTP Basic authentication or URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl FromStr for ClientId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '~'));
        if ok {
            Ok(ClientId(s.to_owned()))
        } else {
            Err(Error::Invalid(format!(
                "invalid client id {s:?}: use 1-128 ASCII letters, digits or . _ - ~"
            )))
        }
    }
}

impl ClientId {
    /// The id as registered.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A registered redirect URI: absolute, without a fragment. Requests must
/// match it exactly, character for character.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectUri(String);

impl FromStr for RedirectUri {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let url = Url::parse(s).map_err(|e| Error::Invalid(format!("invalid redirect URI {s:?}: {e}")))?;
        if url.fragment().is_some() {
            return Err(Error::Invalid(format!("redirect URI {s:?} must not have a fragment")));
        }
        if url.cannot_be_a_base() && url.scheme() != "urn" {
            return Err(Error::Invalid(format!("redirect URI {s:?} is not a usable URL")));
        }
        Ok(RedirectUri(s.to_owned()))
    }
}

impl RedirectUri {
    /// The URI as registered.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password in memory. Its `Debug` never shows it.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Accepts a new password: 8 to 1024 characters.
    pub fn new(s: String) -> Result<Self> {
        let n = s.chars().count();
        if n < 8 {
            return Err(Error::Invalid("password must have at least 8 characters".into()));
        }
        if n > 1024 {
            return Err(Error::Invalid("password must have at most 1024 characters".into()));
        }
        Ok(Password(s))
    }

    /// A password typed at login, whatever its length.
    pub fn attempt(s: String) -> Self {
        Password(s)
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// The JWS algorithm a client's ID tokens are signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256, the default every relying party supports.
    Rs256,
    /// ECDSA on P-256 with SHA-256: shorter tokens.
    Es256,
}

impl SigningAlg {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Es256 => "ES256",
        }
    }
}

impl FromStr for SigningAlg {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "RS256" => Ok(SigningAlg::Rs256),
            "ES256" => Ok(SigningAlg::Es256),
            _ => Err(Error::Invalid(format!("unsupported signing algorithm {s:?}: use RS256 or ES256"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fold_case_and_refuse_odd_characters() {
        assert_eq!("Alice".parse::<Username>().unwrap().as_str(), "alice");
        assert_eq!("张三".parse::<Username>().unwrap().as_str(), "张三");
        assert!("a b".parse::<Username>().is_err());
        // Every accepted name parses back as stored.
        for name in ["Alice", "张三", "Ärzte", "İvan"] {
            if let Ok(u) = name.parse::<Username>() {
                assert_eq!(u.as_str().parse::<Username>().ok().as_ref(), Some(&u), "{name}");
            }
        }
        assert!("".parse::<Username>().is_err());
    }

    #[test]
    fn redirect_uris_must_be_absolute_without_fragment() {
        assert!("https://app.example/cb".parse::<RedirectUri>().is_ok());
        assert!("https://app.example/cb#x".parse::<RedirectUri>().is_err());
        assert!("/cb".parse::<RedirectUri>().is_err());
    }

    #[test]
    fn client_ids_are_unreserved_characters() {
        assert!("hotline-console".parse::<ClientId>().is_ok());
        assert!("a:b".parse::<ClientId>().is_err());
    }
}
