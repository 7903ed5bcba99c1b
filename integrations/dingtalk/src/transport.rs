//! How a request reaches DingTalk and how it is authenticated.
//!
//! Callers describe a call as an [`ApiRequest`] (gateway, path, body, which
//! identity); a [`Transport`] turns it into HTTP. [`StandardTransport`] is the
//! public DingTalk: an app access token, cached, on every call. A 政务钉钉
//! (government edition) transport, which signs every request with HMAC-SHA256
//! `X-Hmac-Auth-*` headers instead, would be another implementation of the same
//! trait; no caller changes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::config::{DingTalkConfig, join};
use crate::error::{Error, Result};

/// Largest answer body read from DingTalk.
const MAX_BODY: usize = 4 << 20;

/// Which DingTalk gateway serves a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gateway {
    /// The v1.0 REST gateway (`api_base`): errors are HTTP 4xx/5xx with `{"code","message","requestid"}`.
    Api,
    /// The `topapi` gateway (`oapi_base`): answers carry `errcode` (0 = ok) and `errmsg`.
    Oapi,
}

/// The HTTP method of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST, with a JSON body.
    Post,
}

/// On whose behalf a call is made.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// The app itself (enterprise internal app token, or the transport's signature).
    App,
    /// A signed-in user, with the user access token from the login exchange.
    User(String),
    /// No credentials (the login code exchange carries its own).
    None,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::App => f.write_str("App"),
            Auth::User(_) => f.write_str("User(***)"),
            Auth::None => f.write_str("None"),
        }
    }
}

/// One DingTalk API call, independent of how it is authenticated on the wire.
/// Its `Debug` leaves out the body, which may carry the app secret.
#[derive(Clone)]
pub struct ApiRequest {
    /// GET or POST.
    pub method: Method,
    /// Which gateway.
    pub gateway: Gateway,
    /// Absolute path, e.g. `/topapi/v2/user/get`.
    pub path: String,
    /// Query parameters besides credentials.
    pub query: Vec<(String, String)>,
    /// Who is calling.
    pub auth: Auth,
    /// JSON body of a POST.
    pub body: Option<Value>,
}

impl std::fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiRequest").field("method", &self.method).field("gateway", &self.gateway).field("path", &self.path).field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl ApiRequest {
    /// A POST with a JSON body, as the app.
    pub fn post(gateway: Gateway, path: &str, body: Value) -> ApiRequest {
        ApiRequest { method: Method::Post, gateway, path: path.into(), query: Vec::new(), auth: Auth::App, body: Some(body) }
    }

    /// A GET, as the app.
    pub fn get(gateway: Gateway, path: &str) -> ApiRequest {
        ApiRequest { method: Method::Get, gateway, path: path.into(), query: Vec::new(), auth: Auth::App, body: None }
    }

    /// The same call on behalf of `auth`.
    pub fn with_auth(mut self, auth: Auth) -> ApiRequest {
        self.auth = auth;
        self
    }
}

/// Sends DingTalk calls with the right credentials and turns DingTalk's two error
/// shapes into [`Error::Api`].
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends `request` and returns the JSON body of a successful answer (an `oapi`
    /// answer with `errcode` 0, or a 2xx `api` answer).
    async fn call(&self, request: &ApiRequest) -> Result<Value>;

    /// The app access token this transport authenticates with. Transports that sign
    /// requests instead of using tokens answer [`Error::Invalid`].
    async fn access_token(&self) -> Result<String>;
}

/// The public DingTalk: app access token from `POST /v1.0/oauth2/accessToken`,
/// cached until `token_refresh_margin` before it expires, fetched by one caller at
/// a time (the others wait for it), and replaced once when DingTalk says it is no
/// longer valid.
pub struct StandardTransport {
    http: reqwest::Client,
    config: Arc<DingTalkConfig>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for StandardTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandardTransport").field("app_key", &self.config.app_key).finish_non_exhaustive()
    }
}

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

/// A failed attempt, and whether it failed because the token was not accepted.
struct Failure {
    error: Error,
    token_invalid: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure { error, token_invalid: false }
    }
}

impl StandardTransport {
    /// A transport for `config`, with its timeouts.
    pub fn new(config: Arc<DingTalkConfig>) -> Result<StandardTransport> {
        let http = http_client(&config)?;
        Ok(StandardTransport { http, config, token: tokio::sync::Mutex::new(None) })
    }

    /// The cached app token, or a fresh one (single flight: the lock is held across the fetch).
    async fn token(&self) -> Result<String> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && Instant::now() < t.refresh_at
        {
            return Ok(t.value.clone());
        }
        let (value, expire_in) = self.fetch_token().await?;
        let refresh_at = Instant::now() + Duration::from_secs(expire_in).saturating_sub(self.config.token_refresh_margin);
        *slot = Some(CachedToken { value: value.clone(), refresh_at });
        Ok(value)
    }

    /// Forgets `used` if it is still the cached token (another caller may have replaced it already).
    async fn invalidate(&self, used: &str) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.value == used) {
            *slot = None;
        }
    }

    async fn fetch_token(&self) -> Result<(String, u64)> {
        let url = join(&self.config.api_base, "/v1.0/oauth2/accessToken");
        let body = json!({"appKey": self.config.app_key, "appSecret": self.config.app_secret.expose()});
        tracing::debug!(app_key = %self.config.app_key, "fetching DingTalk app access token");
        let answer = send(self.http.post(url).json(&body)).await.map_err(|f| f.error)?;
        let token = answer.get("accessToken").and_then(Value::as_str).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(Error::Transport("the token answer has no accessToken".into()));
        };
        // DingTalk's tokens live 7,200 s; a larger figure is not believed (and
        // an absurd one would overflow the clock arithmetic).
        let expire_in = answer.get("expireIn").and_then(as_u64).unwrap_or(7200).min(7200);
        Ok((token.to_owned(), expire_in))
    }

    async fn attempt(&self, request: &ApiRequest, token: Option<&str>) -> std::result::Result<Value, Failure> {
        let base = match request.gateway {
            Gateway::Api => &self.config.api_base,
            Gateway::Oapi => &self.config.oapi_base,
        };
        let mut url = join(base, &request.path);
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &request.query {
                q.append_pair(k, v);
            }
            if let (Gateway::Oapi, Some(t)) = (request.gateway, token) {
                q.append_pair("access_token", t);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let mut builder = match request.method {
            Method::Get => self.http.get(url),
            Method::Post => self.http.post(url),
        };
        if let (Gateway::Api, Some(t)) = (request.gateway, token) {
            builder = builder.header("x-acs-dingtalk-access-token", t);
        }
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        send(builder).await
    }
}

#[async_trait]
impl Transport for StandardTransport {
    async fn call(&self, request: &ApiRequest) -> Result<Value> {
        match &request.auth {
            Auth::App => {
                let token = self.token().await?;
                match self.attempt(request, Some(&token)).await {
                    Ok(v) => Ok(v),
                    Err(f) if f.token_invalid => {
                        tracing::info!(path = %request.path, error = %f.error, "DingTalk refused the app token; fetching a new one");
                        self.invalidate(&token).await;
                        let token = self.token().await?;
                        self.attempt(request, Some(&token)).await.map_err(|f| f.error)
                    }
                    Err(f) => Err(f.error),
                }
            }
            Auth::User(t) => self.attempt(request, Some(t)).await.map_err(|f| f.error),
            Auth::None => self.attempt(request, None).await.map_err(|f| f.error),
        }
    }

    async fn access_token(&self) -> Result<String> {
        self.token().await
    }
}

/// A reqwest client with the configuration's timeouts.
pub(crate) fn http_client(config: &DingTalkConfig) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(Error::transport)
}

/// Sends, reads at most [`MAX_BODY`], and classifies the answer.
async fn send(builder: reqwest::RequestBuilder) -> std::result::Result<Value, Failure> {
    let mut response = builder.send().await.map_err(|e| Error::Transport(describe(&e)))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| Error::Transport(describe(&e)))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Error::Transport(format!("answer larger than {MAX_BODY} bytes")).into());
        }
        body.extend_from_slice(&chunk);
    }
    classify(status, &body)
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("timed out: {e}")
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    }
}

/// A number that may arrive as a JSON number or a string of digits.
pub(crate) fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A JSON value as text: strings as they are, numbers in decimal.
fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The first 200 characters of an unexpected body, for error messages.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// `errcode`s that mean the access token was not accepted.
const TOKEN_ERRCODES: &[&str] = &["40001", "40014", "42001"];

/// Turns an answer into its JSON body, or the error it carries.
fn classify(status: u16, body: &[u8]) -> std::result::Result<Value, Failure> {
    let ok_status = (200..300).contains(&status);
    let json: Option<Value> = serde_json::from_slice(body).ok().filter(Value::is_object);
    let Some(json) = json else {
        let error = if ok_status {
            Error::Transport(format!("answer is not a JSON object: {}", snippet(body)))
        } else {
            Error::Api { code: format!("http_{status}"), message: snippet(body), request_id: None, status }
        };
        return Err(Failure { error, token_invalid: status == 401 });
    };
    let request_id = json.get("request_id").or_else(|| json.get("requestid")).or_else(|| json.get("requestId")).and_then(as_text);
    if let Some(errcode) = json.get("errcode").and_then(as_text)
        && errcode != "0"
    {
        let message = json.get("errmsg").and_then(as_text).unwrap_or_default();
        let sub_code = json.get("sub_code").and_then(as_text);
        // 88 is "authentication failed"; its sub_code says why (60011 is "no permission", not a bad token).
        let token_invalid = TOKEN_ERRCODES.contains(&errcode.as_str())
            || (errcode == "88" && sub_code.as_deref().is_none_or(|s| TOKEN_ERRCODES.contains(&s)))
            || status == 401;
        return Err(Failure { error: Error::Api { code: errcode, message, request_id, status }, token_invalid });
    }
    if !ok_status {
        let code = json.get("code").and_then(as_text).unwrap_or_else(|| format!("http_{status}"));
        let message = json.get("message").or_else(|| json.get("errmsg")).and_then(as_text).unwrap_or_default();
        let token_invalid = status == 401 || code.eq_ignore_ascii_case("InvalidAuthentication");
        return Err(Failure { error: Error::Api { code, message, request_id, status }, token_invalid });
    }
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: u16, body: &str) -> (String, bool) {
        match classify(status, body.as_bytes()) {
            Ok(v) => panic!("expected an error, got {v}"),
            Err(f) => (f.error.api_code().unwrap_or("transport").to_owned(), f.token_invalid),
        }
    }

    #[test]
    fn oapi_errors() {
        assert_eq!(err(200, r#"{"errcode":40014,"errmsg":"不合法的access_token"}"#), ("40014".into(), true));
        assert_eq!(err(200, r#"{"errcode":88,"sub_code":"42001","errmsg":"x"}"#), ("88".into(), true));
        assert_eq!(err(200, r#"{"errcode":88,"sub_code":"60011","errmsg":"no permission"}"#), ("88".into(), false));
        assert_eq!(err(200, r#"{"errcode":143103,"errmsg":"QPM"}"#), ("143103".into(), false));
        assert!(classify(200, br#"{"errcode":0,"errmsg":"ok","task_id":5}"#).is_ok());
    }

    #[test]
    fn api_errors() {
        assert_eq!(err(400, r#"{"code":"invalidClientIdOrSecret","message":"bad","requestid":"r"}"#), ("invalidClientIdOrSecret".into(), false));
        assert_eq!(err(401, r#"{"code":"InvalidAuthentication","message":"bad"}"#), ("InvalidAuthentication".into(), true));
        assert_eq!(err(503, "Service Unavailable"), ("http_503".into(), false));
        assert_eq!(err(200, "<html>"), ("transport".into(), false));
        assert_eq!(err(200, "[1]"), ("transport".into(), false));
        assert!(classify(200, br#"{"accessToken":"t","expireIn":7200}"#).is_ok());
    }
}
