//! Staff log in with DingTalk: third-party website login (OAuth 2.0).

use serde::Deserialize;
use serde_json::json;
use url::Url;

use crate::client::DingTalk;
use crate::config::join;
use crate::error::{Error, Result};
use crate::transport::{ApiRequest, Auth, Gateway};

/// A user access token from the login code exchange.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserToken {
    /// Bearer token for `x-acs-dingtalk-access-token`.
    pub access_token: String,
    /// Token to get a new access token.
    #[serde(default, deserialize_with = "crate::client::nullable")]
    pub refresh_token: String,
    /// Seconds the access token is valid.
    #[serde(default, deserialize_with = "crate::client::nullable")]
    pub expire_in: i64,
    /// The organisation chosen at login (with `scope=openid corpid`).
    #[serde(default)]
    pub corp_id: Option<String>,
}

impl std::fmt::Debug for UserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserToken").field("expire_in", &self.expire_in).field("corp_id", &self.corp_id).finish_non_exhaustive()
    }
}

/// The signed-in user, as `contact/users/me` describes them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DingTalkUser {
    /// Display name.
    #[serde(deserialize_with = "crate::client::nullable")]
    pub nick: String,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Mobile number (needs the app's phone permission).
    pub mobile: Option<String>,
    /// Id of this user for this app.
    #[serde(deserialize_with = "crate::client::nullable")]
    pub open_id: String,
    /// Id of this user across the organisation's apps: the stable key.
    #[serde(deserialize_with = "crate::client::nullable")]
    pub union_id: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Country calling code of `mobile`, e.g. `86`.
    pub state_code: Option<String>,
}

impl DingTalk {
    /// Where to send the browser to log in with DingTalk; DingTalk comes back to
    /// `redirect_uri` with `authCode` and `state`.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> Url {
        let mut url = join(&self.config.login_base, "/oauth2/auth");
        url.query_pairs_mut()
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.app_key)
            .append_pair("scope", "openid")
            .append_pair("state", state)
            .append_pair("prompt", "consent");
        url
    }

    /// Exchanges the `authCode` of a login for a user access token. When the
    /// configuration has a `corp_id` and DingTalk names the login's organisation,
    /// they must match.
    pub async fn exchange_code(&self, auth_code: &str) -> Result<UserToken> {
        if auth_code.is_empty() || auth_code.len() > 512 {
            return Err(Error::Invalid("authCode is empty or too long".into()));
        }
        self.user_token(json!({
            "clientId": self.config.app_key,
            "clientSecret": self.config.app_secret.expose(),
            "code": auth_code,
            "grantType": "authorization_code",
        }))
        .await
    }

    /// Gets a new user access token with a refresh token.
    pub async fn refresh_user_token(&self, refresh_token: &str) -> Result<UserToken> {
        if refresh_token.is_empty() {
            return Err(Error::Invalid("refresh token is empty".into()));
        }
        self.user_token(json!({
            "clientId": self.config.app_key,
            "clientSecret": self.config.app_secret.expose(),
            "refreshToken": refresh_token,
            "grantType": "refresh_token",
        }))
        .await
    }

    /// Calls `userAccessToken`; refuses a token for another organisation when both
    /// the configuration and the answer name one.
    async fn user_token(&self, body: serde_json::Value) -> Result<UserToken> {
        let request = ApiRequest::post(Gateway::Api, "/v1.0/oauth2/userAccessToken", body).with_auth(Auth::None);
        let token: UserToken = self.call(request).await?;
        if token.access_token.is_empty() {
            return Err(Error::Transport("userAccessToken answered without an accessToken".into()));
        }
        if let (Some(ours), Some(theirs)) = (&self.config.corp_id, &token.corp_id)
            && ours != theirs
        {
            return Err(Error::Invalid(format!("the login is for organisation {theirs}, not {ours}")));
        }
        Ok(token)
    }

    /// The DingTalk account a user access token belongs to. Any DingTalk account can
    /// log in: resolve `union_id` with [`DingTalk::user_by_unionid`] to know that it
    /// is a member of the organisation before trusting it as staff.
    pub async fn me(&self, user_token: &str) -> Result<DingTalkUser> {
        let request = ApiRequest::get(Gateway::Api, "/v1.0/contact/users/me").with_auth(Auth::User(user_token.to_owned()));
        let user: DingTalkUser = self.call(request).await?;
        if user.union_id.is_empty() {
            return Err(Error::Transport("contact/users/me answered without a unionId".into()));
        }
        Ok(user)
    }
}
