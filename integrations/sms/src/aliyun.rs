//! Alibaba Cloud SMS (`dysmsapi`, `SendSms`, version 2017-05-25) as an [`SmsGateway`].

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::aliyun_sign::{percent_encode, rpc_signature};
use crate::error::{Error, Result};
use crate::gateway::{OutgoingSms, SmsGateway, Submitted, normalize_mobile};
use crate::secret::Secret;

/// The public dysmsapi endpoint.
pub const ALIYUN_DEFAULT_ENDPOINT: &str = "https://dysmsapi.aliyuncs.com";
/// The API version this client speaks.
pub const ALIYUN_SMS_VERSION: &str = "2017-05-25";

/// Settings for [`AliyunSms`].
#[derive(Debug, Clone)]
pub struct AliyunConfig {
    /// Base URL, default [`ALIYUN_DEFAULT_ENDPOINT`]; a simulator's URL in tests.
    pub endpoint: String,
    /// The RAM AccessKey id.
    pub access_key_id: String,
    /// The RAM AccessKey secret.
    pub access_key_secret: Secret,
    /// `RegionId`, default `cn-hangzhou`.
    pub region_id: String,
    /// The approved signature name (`SignName`), e.g. `某市12345`.
    pub sign_name: String,
    /// Template used when a message has no template of its own; it receives `{"content": text}`.
    pub default_template_code: String,
    /// Whole-request timeout (default 10 s).
    pub timeout: Duration,
}

impl Default for AliyunConfig {
    fn default() -> Self {
        AliyunConfig {
            endpoint: ALIYUN_DEFAULT_ENDPOINT.into(),
            access_key_id: String::new(),
            access_key_secret: Secret::default(),
            region_id: "cn-hangzhou".into(),
            sign_name: String::new(),
            default_template_code: String::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The JSON body of a `SendSms` answer (success and error share it).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendSmsResponse {
    code: Option<String>,
    message: Option<String>,
    biz_id: Option<String>,
    request_id: Option<String>,
}

/// Alibaba Cloud SMS client. `send` is not idempotent: the caller dedupes by `reference` (`OutId`).
#[derive(Debug, Clone)]
pub struct AliyunSms {
    config: AliyunConfig,
    http: reqwest::Client,
}

impl AliyunSms {
    /// Builds a client; fails on an unusable configuration.
    pub fn new(config: AliyunConfig) -> Result<Self> {
        if config.access_key_id.is_empty() || config.access_key_secret.expose().is_empty() {
            return Err(Error::Config("AccessKey id and secret are required".into()));
        }
        if config.sign_name.is_empty() {
            return Err(Error::Config("sign_name is required".into()));
        }
        url::Url::parse(&config.endpoint)
            .map_err(|e| Error::Config(format!("endpoint {:?}: {e}", config.endpoint)))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        Ok(AliyunSms { config, http })
    }

    /// The business parameters plus the common RPC parameters, unsigned.
    fn params(
        &self,
        sms: &OutgoingSms,
        nonce: &str,
        timestamp: &str,
    ) -> Result<BTreeMap<String, String>> {
        let phone = normalize_mobile(&sms.to)?;
        let (template_code, template_param) = match &sms.template {
            Some(t) => (t.code.clone(), t.params.clone()),
            None => {
                if self.config.default_template_code.is_empty() {
                    return Err(Error::Config(
                        "message has no template and no default_template_code is configured".into(),
                    ));
                }
                if sms.text.is_empty() {
                    return Err(Error::InvalidContent("empty text".into()));
                }
                (
                    self.config.default_template_code.clone(),
                    serde_json::json!({ "content": sms.text }),
                )
            }
        };
        if !template_param.is_object() {
            return Err(Error::InvalidContent(
                "template parameters must be a JSON object".into(),
            ));
        }
        let template_param = serde_json::to_string(&template_param)
            .map_err(|e| Error::InvalidContent(format!("template parameters: {e}")))?;
        let mut p = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            p.insert(k.to_owned(), v.to_owned());
        };
        put("AccessKeyId", &self.config.access_key_id);
        put("Action", "SendSms");
        put("Format", "JSON");
        put("RegionId", &self.config.region_id);
        put("SignatureMethod", "HMAC-SHA1");
        put("SignatureNonce", nonce);
        put("SignatureVersion", "1.0");
        put("Timestamp", timestamp);
        put("Version", ALIYUN_SMS_VERSION);
        put("PhoneNumbers", &phone);
        put("SignName", &self.config.sign_name);
        put("TemplateCode", &template_code);
        put("TemplateParam", &template_param);
        if !sms.reference.is_empty() {
            put("OutId", &sms.reference);
        }
        Ok(p)
    }

    /// The full signed GET URL for `params`.
    fn signed_url(&self, params: &BTreeMap<String, String>) -> String {
        let signature = rpc_signature("GET", params, self.config.access_key_secret.expose());
        let mut query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
            .collect();
        query.push(format!("Signature={}", percent_encode(&signature)));
        format!(
            "{}/?{}",
            self.config.endpoint.trim_end_matches('/'),
            query.join("&")
        )
    }
}

/// Maps a non-`OK` `Code` to an error: throttling and system errors are retryable; number,
/// signature, account and content errors are permanent.
pub fn aliyun_error(code: &str, message: &str) -> Error {
    let msg = format!("{code}: {message}");
    match code {
        "isv.MOBILE_NUMBER_ILLEGAL" | "isv.MOBILE_COUNT_OVER_LIMIT" => Error::InvalidNumber(msg),
        c if c.starts_with("Throttling")
            || c == "isv.BUSINESS_LIMIT_CONTROL"
            || c == "isv.DAY_LIMIT_CONTROL" =>
        {
            Error::FlowControl(msg)
        }
        "isp.SYSTEM_ERROR"
        | "isp.RAM_PERMISSION_DENY_TEMPORARY"
        | "ServiceUnavailable"
        | "InternalError"
        | "SignatureNonceUsed" => Error::Server(msg),
        c if c.starts_with("SignatureDoesNotMatch")
            || c.starts_with("InvalidAccessKeyId")
            || c.starts_with("InvalidTimeStamp")
            || c == "isp.RAM_PERMISSION_DENY"
            || c == "Forbidden.RAM" =>
        {
            Error::AuthFailed(msg)
        }
        _ => Error::Rejected {
            code: code.to_owned(),
            message: message.to_owned(),
        },
    }
}

fn transport_error(e: reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout(format!("Alibaba Cloud SMS: {e}"))
    } else {
        Error::Transport(e.to_string())
    }
}

/// The most of an answer read from Alibaba Cloud.
const MAX_ANSWER: usize = 64 * 1024;

#[async_trait]
impl SmsGateway for AliyunSms {
    async fn send(&self, sms: &OutgoingSms) -> Result<Submitted> {
        let nonce = format!("{:032x}", rand::random::<u128>());
        let timestamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let params = self.params(sms, &nonce, &timestamp)?;
        let url = self.signed_url(&params);
        let mut resp = self.http.get(url).send().await.map_err(transport_error)?;
        let status = resp.status();
        // An answer is a few hundred bytes: read no more than MAX_ANSWER of one.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(Error::Protocol(format!("an answer larger than {MAX_ANSWER} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        let body = String::from_utf8_lossy(&body);
        let parsed: Option<SendSmsResponse> = serde_json::from_str(&body).ok();
        match parsed.as_ref().and_then(|p| p.code.as_deref()) {
            Some("OK") => {
                let biz_id = parsed
                    .and_then(|p| p.biz_id)
                    .ok_or_else(|| Error::Protocol("Code OK without BizId".into()))?;
                tracing::debug!(reference = %sms.reference, %biz_id, "Alibaba Cloud SMS accepted");
                Ok(Submitted {
                    gateway_ids: vec![biz_id],
                })
            }
            Some(code) => {
                let message = parsed
                    .as_ref()
                    .and_then(|p| p.message.clone())
                    .unwrap_or_default();
                tracing::warn!(
                    reference = %sms.reference,
                    code,
                    request_id = parsed.as_ref().and_then(|p| p.request_id.as_deref()).unwrap_or(""),
                    "Alibaba Cloud SMS refused"
                );
                if status.is_server_error() && !code.starts_with("isv.") {
                    Err(Error::Server(format!("HTTP {status}: {code}: {message}")))
                } else {
                    Err(aliyun_error(code, &message))
                }
            }
            None if status.is_server_error() => Err(Error::Server(format!("HTTP {status}"))),
            None => Err(Error::Protocol(format!(
                "HTTP {status} with unexpected body: {}",
                body.chars().take(200).collect::<String>()
            ))),
        }
    }

    fn name(&self) -> &'static str {
        "aliyun"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::Template;

    fn client() -> AliyunSms {
        AliyunSms::new(AliyunConfig {
            endpoint: "http://127.0.0.1:1/".into(),
            access_key_id: "id".into(),
            access_key_secret: "secret".into(),
            sign_name: "某市12345".into(),
            default_template_code: "SMS_1".into(),
            ..AliyunConfig::default()
        })
        .expect("config")
    }

    fn sms(text: &str) -> OutgoingSms {
        OutgoingSms {
            to: "13800138000".into(),
            text: text.into(),
            template: None,
            reference: "m-1".into(),
            want_report: true,
        }
    }

    #[test]
    fn default_template_carries_text() {
        let p = client().params(&sms("您好 *"), "n", "t").expect("params");
        assert_eq!(p["TemplateCode"], "SMS_1");
        assert_eq!(p["TemplateParam"], r#"{"content":"您好 *"}"#);
        assert_eq!(p["OutId"], "m-1");
        assert_eq!(p["Format"], "JSON");
        let mut with_template = sms("x");
        with_template.template = Some(Template {
            code: "SMS_9".into(),
            params: serde_json::json!({"code": "1234"}),
        });
        let p = client().params(&with_template, "n", "t").expect("params");
        assert_eq!(p["TemplateCode"], "SMS_9");
        assert_eq!(p["TemplateParam"], r#"{"code":"1234"}"#);
    }

    #[test]
    fn url_is_signed_and_encoded() {
        let c = client();
        let p = c
            .params(&sms("a b"), "n", "2024-01-01T00:00:00Z")
            .expect("params");
        let url = c.signed_url(&p);
        assert!(url.starts_with("http://127.0.0.1:1/?AccessKeyId=id&Action=SendSms"));
        assert!(url.contains("TemplateParam=%7B%22content%22%3A%22a%20b%22%7D"));
        assert!(url.contains("&Signature="));
    }

    #[test]
    fn invalid_number_is_permanent() {
        let mut s = sms("x");
        s.to = "12345".into();
        let e = client().params(&s, "n", "t").expect_err("bad number");
        assert!(matches!(e, Error::InvalidNumber(_)) && !e.is_retryable());
    }

    #[test]
    fn error_codes_map_to_retryability() {
        assert!(aliyun_error("Throttling.User", "").is_retryable());
        assert!(aliyun_error("isv.BUSINESS_LIMIT_CONTROL", "").is_retryable());
        assert!(aliyun_error("isp.SYSTEM_ERROR", "").is_retryable());
        assert!(!aliyun_error("isv.MOBILE_NUMBER_ILLEGAL", "").is_retryable());
        assert!(!aliyun_error("SignatureDoesNotMatch", "").is_retryable());
        assert!(!aliyun_error("isv.TEMPLATE_MISSING_PARAMETERS", "").is_retryable());
        assert!(matches!(
            aliyun_error("InvalidAccessKeyId.NotFound", ""),
            Error::AuthFailed(_)
        ));
    }
}
