//! The DingTalk client: configuration plus a transport, cheap to clone.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::DingTalkConfig;
use crate::error::{Error, Result};
use crate::transport::{ApiRequest, StandardTransport, Transport};

/// A DingTalk enterprise internal app. Clones share the token cache and connections.
#[derive(Clone)]
pub struct DingTalk {
    pub(crate) config: Arc<DingTalkConfig>,
    pub(crate) transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for DingTalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingTalk").field("app_key", &self.config.app_key).field("agent_id", &self.config.agent_id).finish_non_exhaustive()
    }
}

impl DingTalk {
    /// A client for the public DingTalk (the standard token transport).
    pub fn new(config: DingTalkConfig) -> Result<DingTalk> {
        let config = Arc::new(config);
        let transport = Arc::new(StandardTransport::new(config.clone())?);
        Ok(DingTalk { config, transport })
    }

    /// A client that sends through `transport` (e.g. a government-edition gateway).
    pub fn with_transport(config: DingTalkConfig, transport: Arc<dyn Transport>) -> DingTalk {
        DingTalk { config: Arc::new(config), transport }
    }

    /// The configuration.
    pub fn config(&self) -> &DingTalkConfig {
        &self.config
    }

    /// The app access token: cached until 5 minutes before it expires, fetched once
    /// for any number of concurrent callers.
    pub async fn access_token(&self) -> Result<String> {
        self.transport.access_token().await
    }

    /// Sends a call and decodes its answer.
    pub(crate) async fn call<T: DeserializeOwned>(&self, request: ApiRequest) -> Result<T> {
        let value = self.transport.call(&request).await?;
        decode(&request.path, value)
    }

    /// Sends a call and decodes its `result` member.
    pub(crate) async fn call_result<T: DeserializeOwned>(&self, request: ApiRequest) -> Result<T> {
        let mut value = self.transport.call(&request).await?;
        let result = value.get_mut("result").map(Value::take).unwrap_or(Value::Null);
        decode(&request.path, result)
    }
}

/// Decodes an answer, naming the call when it has an unexpected shape.
pub(crate) fn decode<T: DeserializeOwned>(path: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::Transport(format!("unexpected answer from {path}: {e}")))
}

/// Deserializes `null` as the type's default (DingTalk sends `null` for empty fields).
pub(crate) fn nullable<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}
