use url::Url;

/// How the identity provider behaves; the hub fills this from its configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The issuer URL (`iss`), the base of every endpoint URL.
    pub issuer: Url,
    /// Access token lifetime in seconds.
    pub access_token_ttl: i64,
    /// ID token lifetime in seconds.
    pub id_token_ttl: i64,
    /// Authorization code lifetime in seconds.
    pub code_ttl: i64,
    /// SSO session lifetime in seconds (a working day); session-bound refresh
    /// tokens die with the session.
    pub session_ttl: i64,
    /// Lifetime of `offline_access` refresh tokens, which outlive the session.
    pub offline_token_ttl: i64,
    /// Failed logins per account before it is locked for a while.
    pub max_failures_per_account: i64,
    /// Failed logins per source address before it is locked for a while.
    pub max_failures_per_address: i64,
    /// The window over which failures are counted, and how long a lock lasts, in seconds.
    pub lockout_secs: i64,
}

impl Settings {
    /// Sensible defaults for `issuer`.
    pub fn new(issuer: Url) -> Self {
        Settings {
            issuer,
            access_token_ttl: 900,
            id_token_ttl: 3600,
            code_ttl: 60,
            session_ttl: 10 * 3600,
            offline_token_ttl: 30 * 24 * 3600,
            max_failures_per_account: 5,
            max_failures_per_address: 20,
            lockout_secs: 15 * 60,
        }
    }

    /// The absolute URL of `path` under the issuer.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer.as_str().trim_end_matches('/'), path)
    }

    /// Cookies carry `Secure` when the issuer is served over https.
    pub fn secure_cookies(&self) -> bool {
        self.issuer.scheme() == "https"
    }

    /// The issuer as the exact string put in `iss`.
    pub fn issuer_str(&self) -> String {
        self.issuer.as_str().trim_end_matches('/').to_owned()
    }
}
