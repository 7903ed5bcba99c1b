//! Upstream identity providers offered on the login page: DingTalk's
//! third-party website login, as an [`Upstream`] of the identity service,
//! and the configured upstream OpenID Connect providers.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use civichub_dingtalk::DingTalk;
use civichub_identity::{ExternalIdentity, Flow, Identity, Upstream, UpstreamError};
use url::Url;

use crate::config::Config;


/// Staff log in by scanning with DingTalk: the account is the organisation
/// member its `unionId` resolves to, keyed by the member's userid (the key
/// the directory and `civichub user link --dingtalk` use).
#[derive(Debug)]
struct DingTalkLogin {
    client: DingTalk,
    link_by_mobile: bool,
}

fn failed(e: civichub_dingtalk::Error) -> UpstreamError {
    UpstreamError::Failed(e.to_string())
}

#[async_trait]
impl Upstream for DingTalkLogin {
    fn name(&self) -> &str {
        "dingtalk"
    }

    fn label(&self) -> &str {
        "钉钉登录"
    }

    fn amr(&self) -> &str {
        "dingtalk"
    }

    fn links_by_phone(&self) -> bool {
        self.link_by_mobile
    }

    async fn authorize_url(&self, flow: &Flow, redirect_uri: &str) -> Result<Url, UpstreamError> {
        Ok(self.client.authorize_url(redirect_uri, &flow.state))
    }

    async fn finish(&self, _flow: &Flow, query: &HashMap<String, String>, _redirect_uri: &str) -> Result<ExternalIdentity, UpstreamError> {
        let Some(code) = query.get("authCode").or_else(|| query.get("code")) else {
            return Err(UpstreamError::Refused("钉钉没有返回授权码（authCode）".into()));
        };
        let token = match self.client.exchange_code(code).await {
            Ok(t) => t,
            // The configured corpId and the login's differ.
            Err(civichub_dingtalk::Error::Invalid(why)) => {
                tracing::info!("DingTalk login refused: {why}");
                return Err(UpstreamError::Refused("该钉钉账号所在的组织不是本单位".into()));
            }
            Err(e) => return Err(failed(e)),
        };
        let me = self.client.me(&token.access_token).await.map_err(failed)?;
        let userid = match self.client.user_by_unionid(&me.union_id).await {
            Ok(u) => u,
            Err(civichub_dingtalk::Error::Api { code, .. }) if code == civichub_dingtalk::UNKNOWN_USER => {
                return Err(UpstreamError::Refused("该钉钉账号不是本单位组织的成员".into()));
            }
            Err(e) => return Err(failed(e)),
        };
        Ok(ExternalIdentity {
            subject: userid,
            name: Some(me.nick).filter(|n| !n.is_empty()),
            verified_email: None,
            verified_phone: me.mobile.filter(|m| !m.is_empty() && me.state_code.as_deref().is_none_or(|c| c == "86")),
            session: None,
        })
    }
}

/// Adds the upstreams the configuration enables to `identity`.
pub fn register(config: &Config, identity: &Identity) -> Result<()> {
    let m = &config.messaging;
    if m.dingtalk_login.unwrap_or(false) {
        let Some(client) = crate::channels::dingtalk(m)? else {
            anyhow::bail!("--dingtalk-login needs the DingTalk app: --dingtalk-app-key, --dingtalk-app-secret, --dingtalk-agent-id");
        };
        identity.add_upstream(Arc::new(DingTalkLogin { client, link_by_mobile: m.dingtalk_link_by_mobile.unwrap_or(false) }))?;
    }
    for upstream in &config.upstream_oidc {
        identity.add_upstream(Arc::new(civichub_oidc_upstream::OidcUpstream::new(upstream.clone())?))?;
    }
    Ok(())
}
