//! The warp adapter for oxide-auth's `WebRequest` and `WebResponse` traits
//! (oxide-auth ships frontends for other frameworks, not for warp).

use std::borrow::Cow;

use oxide_auth::endpoint::{NormalizedParameter, OAuthError, QueryParameter, WebRequest, WebResponse};
use serde_json::{Map, Value};
use url::Url;
use warp::http::{HeaderValue, StatusCode, header};

/// Why an OAuth request could not be answered by the flow itself.
#[derive(Debug)]
pub enum OAuthFailure {
    /// oxide-auth gave up (unknown client, bad redirect, storage failure …).
    OAuth(OAuthError),
    /// The request was malformed before any flow ran.
    BadRequest(String),
}

/// An OAuth request: query, url-encoded body and `Authorization` header.
#[derive(Clone, Debug)]
pub struct OAuthRequest {
    query: NormalizedParameter,
    body: NormalizedParameter,
    auth: Option<String>,
}

/// Parses `application/x-www-form-urlencoded` text; a repeated key poisons its
/// value, as RFC 6749 §3.1 requires.
pub fn parse_form(raw: &[u8]) -> Result<NormalizedParameter, OAuthFailure> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(raw)
        .map_err(|e| OAuthFailure::BadRequest(format!("malformed form encoding: {e}")))?;
    let mut params = NormalizedParameter::new();
    for (k, v) in pairs {
        params.insert_or_poison(Cow::Owned(k), Cow::Owned(v));
    }
    Ok(params)
}

impl OAuthRequest {
    /// A request from its raw parts.
    pub fn new(query: &str, body: &[u8], auth: Option<String>) -> Result<Self, OAuthFailure> {
        Ok(OAuthRequest { query: parse_form(query.as_bytes())?, body: parse_form(body)?, auth })
    }

    /// A unique query or body parameter (query first).
    pub fn param(&self, key: &str) -> Option<String> {
        self.query
            .unique_value(key)
            .or_else(|| self.body.unique_value(key))
            .map(Cow::into_owned)
    }

    /// A unique body parameter.
    pub fn body_param(&self, key: &str) -> Option<String> {
        self.body.unique_value(key).map(Cow::into_owned)
    }

    /// Replaces the `Authorization` header (userinfo accepts the token in the body too).
    pub fn set_auth(&mut self, auth: Option<String>) {
        self.auth = auth;
    }

    /// The `Authorization` header.
    pub fn auth(&self) -> Option<&str> {
        self.auth.as_deref()
    }
}

impl WebRequest for OAuthRequest {
    type Error = OAuthFailure;
    type Response = OAuthResponse;

    fn query(&mut self) -> Result<Cow<'_, dyn QueryParameter + 'static>, Self::Error> {
        Ok(Cow::Borrowed(&self.query as &(dyn QueryParameter + 'static)))
    }

    fn urlbody(&mut self) -> Result<Cow<'_, dyn QueryParameter + 'static>, Self::Error> {
        Ok(Cow::Borrowed(&self.body as &(dyn QueryParameter + 'static)))
    }

    fn authheader(&mut self) -> Result<Option<Cow<'_, str>>, Self::Error> {
        Ok(self.auth.as_deref().map(Cow::Borrowed))
    }
}

enum Body {
    Text(String),
    Json(String),
}

/// What a flow answers; turned into a warp reply by [`OAuthResponse::into_reply`].
pub struct OAuthResponse {
    status: StatusCode,
    location: Option<Url>,
    www_authenticate: Option<String>,
    body: Option<Body>,
    extra: Map<String, Value>,
}

impl Default for OAuthResponse {
    fn default() -> Self {
        OAuthResponse {
            status: StatusCode::OK,
            location: None,
            www_authenticate: None,
            body: None,
            extra: Map::new(),
        }
    }
}

impl OAuthResponse {
    /// A response whose JSON body gets `extra` merged in (the ID token beside
    /// oxide-auth's bearer token response).
    pub fn with_extra(extra: Map<String, Value>) -> Self {
        OAuthResponse { extra, ..Default::default() }
    }

    /// The status code so far.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The redirect target, if this is a redirect.
    pub fn location_mut(&mut self) -> Option<&mut Url> {
        self.location.as_mut()
    }

    /// The warp reply. Token and error bodies are never cached.
    pub fn into_reply(self) -> warp::reply::Response {
        let mut builder = warp::http::Response::builder().status(self.status);
        if let Some(location) = &self.location {
            builder = builder.header(header::LOCATION, location.as_str());
        }
        if let Some(challenge) = &self.www_authenticate {
            builder = builder.header(header::WWW_AUTHENTICATE, challenge);
        }
        let body = match self.body {
            Some(Body::Json(json)) => {
                builder = builder
                    .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .header(header::CACHE_CONTROL, "no-store")
                    .header(header::PRAGMA, "no-cache");
                json
            }
            Some(Body::Text(text)) => {
                builder = builder.header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
                text
            }
            None => String::new(),
        };
        builder
            .body(body.into())
            .unwrap_or_else(|_| crate::http::internal_error_reply())
    }
}

impl WebResponse for OAuthResponse {
    type Error = OAuthFailure;

    fn ok(&mut self) -> Result<(), Self::Error> {
        self.status = StatusCode::OK;
        Ok(())
    }

    fn redirect(&mut self, url: Url) -> Result<(), Self::Error> {
        self.status = StatusCode::FOUND;
        self.location = Some(url);
        Ok(())
    }

    fn client_error(&mut self) -> Result<(), Self::Error> {
        self.status = StatusCode::BAD_REQUEST;
        Ok(())
    }

    fn unauthorized(&mut self, header_value: &str) -> Result<(), Self::Error> {
        self.status = StatusCode::UNAUTHORIZED;
        self.www_authenticate = Some(header_value.to_owned());
        Ok(())
    }

    fn body_text(&mut self, text: &str) -> Result<(), Self::Error> {
        self.body = Some(Body::Text(text.to_owned()));
        Ok(())
    }

    fn body_json(&mut self, data: &str) -> Result<(), Self::Error> {
        if self.extra.is_empty() {
            self.body = Some(Body::Json(data.to_owned()));
            return Ok(());
        }
        let mut value: Value = serde_json::from_str(data)
            .map_err(|e| OAuthFailure::BadRequest(format!("flow produced invalid JSON: {e}")))?;
        if let Value::Object(map) = &mut value {
            map.extend(std::mem::take(&mut self.extra));
        }
        self.body = Some(Body::Json(value.to_string()));
        Ok(())
    }
}
