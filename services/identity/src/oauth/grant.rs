//! How an oxide-auth [`Grant`] is kept in the database.

use chrono::{TimeZone, Utc};
use oxide_auth::primitives::grant::{Extensions, Grant, Value};
use oxide_auth::primitives::scope::Scope;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::oidc::LoginContext;
use crate::{Error, Result};

/// Grant extension carrying the [`LoginContext`] as JSON.
pub const LOGIN_EXT: &str = "civichub.login";
/// Grant extension naming the token family (all tokens descended from one code).
pub const FAMILY_EXT: &str = "civichub.family";
const PKCE_EXT: &str = "pkce";

/// A grant as stored in `auth_codes.grant_json` and `tokens.grant_json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredGrant {
    /// The resource owner: a user id, or the client id for client credentials.
    pub owner_id: String,
    /// The client.
    pub client_id: String,
    /// The redirect URI the grant was bound to.
    pub redirect_uri: String,
    /// Granted scope, space-separated.
    pub scope: String,
    /// Expiry (Unix seconds).
    pub until: i64,
    /// The PKCE challenge, in oxide-auth's encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkce: Option<String>,
    /// The login behind a user grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<LoginContext>,
    /// The token family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
}

impl StoredGrant {
    /// Reads what a grant carries.
    pub fn from_grant(grant: &Grant) -> Result<Self> {
        let mut pkce = None;
        let mut login = None;
        let mut family = None;
        for (name, value) in grant.extensions.private() {
            match (name, value) {
                (PKCE_EXT, Some(v)) => pkce = Some(v.to_owned()),
                (LOGIN_EXT, Some(v)) => login = Some(serde_json::from_str(v)?),
                (FAMILY_EXT, Some(v)) => family = Some(v.to_owned()),
                _ => {}
            }
        }
        Ok(StoredGrant {
            owner_id: grant.owner_id.clone(),
            client_id: grant.client_id.clone(),
            redirect_uri: grant.redirect_uri.to_string(),
            scope: grant.scope.to_string(),
            until: grant.until.timestamp(),
            pkce,
            login,
            family,
        })
    }

    /// Rebuilds the oxide-auth grant.
    pub fn to_grant(&self) -> Result<Grant> {
        let mut extensions = Extensions::new();
        if let Some(pkce) = &self.pkce {
            extensions.set_raw(PKCE_EXT.into(), Value::private(Some(pkce.clone())));
        }
        if let Some(login) = &self.login {
            extensions.set_raw(LOGIN_EXT.into(), Value::private(Some(serde_json::to_string(login)?)));
        }
        if let Some(family) = &self.family {
            extensions.set_raw(FAMILY_EXT.into(), Value::private(Some(family.clone())));
        }
        Ok(Grant {
            owner_id: self.owner_id.clone(),
            client_id: self.client_id.clone(),
            scope: self.scope.parse::<Scope>().map_err(|_| Error::Corrupt(format!("scope {:?}", self.scope)))?,
            redirect_uri: Url::parse(&self.redirect_uri).map_err(|e| Error::Corrupt(e.to_string()))?,
            until: Utc.timestamp_opt(self.until, 0).single().unwrap_or_else(Utc::now),
            extensions,
        })
    }

    /// The granted scopes.
    pub fn scopes(&self) -> Vec<&str> {
        self.scope.split_whitespace().collect()
    }

    /// Whether `scope` was granted.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split_whitespace().any(|s| s == scope)
    }
}
