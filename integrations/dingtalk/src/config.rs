//! Where DingTalk is and who CivicHub is to it.

use std::fmt;
use std::time::Duration;

use url::Url;

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, to put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

/// Configuration of the DingTalk adapter for one enterprise internal app.
#[derive(Clone, Debug)]
pub struct DingTalkConfig {
    /// The v1.0 REST gateway, `https://api.dingtalk.com`.
    pub api_base: Url,
    /// The older `topapi` gateway, `https://oapi.dingtalk.com`.
    pub oapi_base: Url,
    /// The browser login pages, `https://login.dingtalk.com`.
    pub login_base: Url,
    /// The app's AppKey (also the OAuth client id).
    pub app_key: String,
    /// The app's AppSecret.
    pub app_secret: Secret,
    /// The app's AgentId, needed to send work notices.
    pub agent_id: i64,
    /// The organisation's corpId, when known (checked against the login's `corpId`).
    pub corp_id: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// How long before its expiry the app token is replaced (5 minutes).
    pub token_refresh_margin: Duration,
}

impl DingTalkConfig {
    /// The public DingTalk gateways, with 10 s timeouts and a 5 minute token margin.
    pub fn new(app_key: impl Into<String>, app_secret: impl Into<Secret>, agent_id: i64) -> DingTalkConfig {
        DingTalkConfig {
            api_base: fixed_url("https://api.dingtalk.com"),
            oapi_base: fixed_url("https://oapi.dingtalk.com"),
            login_base: fixed_url("https://login.dingtalk.com"),
            app_key: app_key.into(),
            app_secret: app_secret.into(),
            agent_id,
            corp_id: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            token_refresh_margin: Duration::from_secs(300),
        }
    }

    /// The same configuration with all three gateways at `base` (a simulator).
    pub fn with_base(mut self, base: &Url) -> DingTalkConfig {
        self.api_base = base.clone();
        self.oapi_base = base.clone();
        self.login_base = base.clone();
        self
    }
}

/// A URL literal of this module.
fn fixed_url(s: &'static str) -> Url {
    Url::parse(s).expect("constant URL parses")
}

/// `base` joined with an absolute `path`, keeping any path prefix of `base`
/// (`http://gw/dingtalk` + `/v1.0/x` → `http://gw/dingtalk/v1.0/x`).
pub(crate) fn join(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(None);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_hidden() {
        let c = DingTalkConfig::new("key", "very-secret", 7);
        let shown = format!("{c:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("key"));
        assert_eq!(c.api_base.as_str(), "https://api.dingtalk.com/");
    }

    #[test]
    fn join_keeps_prefix() {
        let base = Url::parse("http://gw/dingtalk/").expect("url");
        assert_eq!(join(&base, "/v1.0/x").as_str(), "http://gw/dingtalk/v1.0/x");
        let base = Url::parse("http://gw").expect("url");
        assert_eq!(join(&base, "/gettoken").as_str(), "http://gw/gettoken");
    }
}
