//! An Alibaba Cloud `SendSms` simulator (HTTP, warp), for tests and local development.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::sync::oneshot;
use warp::Filter;
use warp::http::StatusCode;

use crate::aliyun::ALIYUN_SMS_VERSION;
use crate::aliyun_sign::{rpc_signature, string_to_sign};
use crate::error::Result;
use crate::gateway::normalize_mobile;
use crate::secret::Secret;

/// Settings for [`AliyunSimulator`].
#[derive(Debug, Clone)]
pub struct AliyunSimConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The AccessKey id the simulator knows.
    pub access_key_id: String,
    /// Its secret, used to verify signatures.
    pub access_key_secret: Secret,
    /// Reject requests whose `Timestamp` is more than 15 minutes off (default true).
    pub check_timestamp: bool,
}

impl Default for AliyunSimConfig {
    fn default() -> Self {
        AliyunSimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_key_id: "LTAI-sim".into(),
            access_key_secret: Secret::new("sim-secret"),
            check_timestamp: true,
        }
    }
}

/// One accepted `SendSms` call.
#[derive(Debug, Clone, PartialEq)]
pub struct AliyunSent {
    /// `PhoneNumbers`, split at commas.
    pub phone_numbers: Vec<String>,
    /// `SignName`.
    pub sign_name: String,
    /// `TemplateCode`.
    pub template_code: String,
    /// `TemplateParam`, parsed.
    pub template_param: Value,
    /// `OutId`.
    pub out_id: Option<String>,
    /// The `BizId` returned.
    pub biz_id: String,
    /// When it arrived.
    pub received_at: SystemTime,
}

#[derive(Default)]
struct State {
    sent: Vec<AliyunSent>,
    nonces: HashSet<String>,
    fail: Option<(String, usize)>,
    requests: usize,
    counter: u64,
}

struct Shared {
    config: AliyunSimConfig,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A simulated dysmsapi endpoint: verifies RPC signature v1 with the configured secret
/// (mismatch: HTTP 400 `SignatureDoesNotMatch`), checks nonce reuse, timestamp and phone numbers,
/// records sends and answers in Alibaba Cloud's JSON shapes. Dropping it stops the server.
pub struct AliyunSimulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for AliyunSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AliyunSimulator")
            .field("addr", &self.addr)
            .finish()
    }
}

impl AliyunSimulator {
    /// Binds and starts serving.
    pub async fn start(config: AliyunSimConfig) -> Result<AliyunSimulator> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State::default()),
        });
        let get = warp::get()
            .and(warp::path::end())
            .and(warp::query::<Vec<(String, String)>>())
            .map(|q: Vec<(String, String)>| ("GET", q));
        let post = warp::post()
            .and(warp::path::end())
            .and(warp::body::content_length_limit(64 * 1024))
            .and(warp::body::form::<Vec<(String, String)>>())
            .map(|q: Vec<(String, String)>| ("POST", q));
        let handler_state = shared.clone();
        let routes = get.or(post).unify().map(
            move |(method, query): (&'static str, Vec<(String, String)>)| {
                let (status, body) = handle(&handler_state, method, query.into_iter().collect());
                warp::reply::with_status(warp::reply::json(&body), status)
            },
        );
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            warp::serve(routes)
                .incoming(listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run(),
        );
        Ok(AliyunSimulator {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to put in [`crate::AliyunConfig::endpoint`].
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Accepted sends, in order.
    pub fn sent(&self) -> Vec<AliyunSent> {
        self.shared.state().sent.clone()
    }

    /// All requests received, accepted or not.
    pub fn requests(&self) -> usize {
        self.shared.state().requests
    }

    /// Answer the next `count` otherwise valid sends with error `code` (e.g. `isv.BUSINESS_LIMIT_CONTROL`,
    /// `Throttling.User`, `isp.SYSTEM_ERROR`).
    pub fn fail_next(&self, code: &str, count: usize) {
        self.shared.state().fail = Some((code.to_owned(), count));
    }
}

impl Drop for AliyunSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn request_id() -> String {
    let r: u128 = rand::random();
    let h = format!("{r:032X}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn error_body(code: &str, message: &str) -> Value {
    json!({
        "RequestId": request_id(),
        "HostId": "dysmsapi.aliyuncs.com",
        "Code": code,
        "Message": message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}"),
    })
}

fn business_error(code: &str, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({ "RequestId": request_id(), "Code": code, "Message": message }),
    )
}

fn handle(shared: &Shared, method: &str, params: BTreeMap<String, String>) -> (StatusCode, Value) {
    shared.state().requests += 1;
    let cfg = &shared.config;
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");

    for required in [
        "AccessKeyId",
        "Action",
        "Signature",
        "SignatureMethod",
        "SignatureNonce",
        "SignatureVersion",
        "Timestamp",
        "Version",
    ] {
        if get(required).is_empty() {
            return (
                StatusCode::BAD_REQUEST,
                error_body(
                    &format!("Missing{required}"),
                    &format!("{required} is mandatory for this action."),
                ),
            );
        }
    }
    if get("AccessKeyId") != cfg.access_key_id {
        return (
            StatusCode::NOT_FOUND,
            error_body(
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
            ),
        );
    }
    if get("SignatureMethod") != "HMAC-SHA1" || get("SignatureVersion") != "1.0" {
        return (
            StatusCode::BAD_REQUEST,
            error_body(
                "InvalidSignatureMethod",
                "Specified signature method is not supported.",
            ),
        );
    }
    let expected = rpc_signature(method, &params, cfg.access_key_secret.expose());
    if expected != get("Signature") {
        let sts = string_to_sign(method, &params);
        return (
            StatusCode::BAD_REQUEST,
            error_body(
                "SignatureDoesNotMatch",
                &format!(
                    "Specified signature is not matched with our calculation. server string to sign is:{sts}"
                ),
            ),
        );
    }
    if cfg.check_timestamp {
        let fresh = chrono::DateTime::parse_from_rfc3339(get("Timestamp")).is_ok_and(|t| {
            let skew = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).abs();
            skew <= chrono::Duration::from_std(Duration::from_secs(900)).unwrap_or_default()
        });
        if !fresh {
            return (
                StatusCode::BAD_REQUEST,
                error_body(
                    "InvalidTimeStamp.Expired",
                    "Specified time stamp or date value is expired.",
                ),
            );
        }
    }
    if !shared
        .state()
        .nonces
        .insert(get("SignatureNonce").to_owned())
    {
        return (
            StatusCode::BAD_REQUEST,
            error_body(
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ),
        );
    }
    if get("Action") != "SendSms" {
        return (
            StatusCode::NOT_FOUND,
            error_body(
                "InvalidAction.NotFound",
                "Specified api is not found, please check your url and method.",
            ),
        );
    }
    if get("Version") != ALIYUN_SMS_VERSION {
        return (
            StatusCode::BAD_REQUEST,
            error_body(
                "InvalidVersion",
                "Specified parameter Version is not valid.",
            ),
        );
    }
    for required in ["PhoneNumbers", "SignName", "TemplateCode"] {
        if get(required).is_empty() {
            return (
                StatusCode::BAD_REQUEST,
                error_body(
                    &format!("Missing{required}"),
                    &format!("{required} is mandatory for this action."),
                ),
            );
        }
    }
    let phones: Vec<String> = get("PhoneNumbers").split(',').map(str::to_owned).collect();
    if phones.len() > 1000 {
        return business_error("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制");
    }
    if phones.iter().any(|p| normalize_mobile(p).is_err()) {
        return business_error("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号");
    }
    let template_param = match get("TemplateParam") {
        "" => Value::Null,
        raw => match serde_json::from_str::<Value>(raw) {
            Ok(v) if v.is_object() => v,
            _ => return business_error("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值"),
        },
    };

    let mut st = shared.state();
    if let Some((code, n)) = st.fail.take() {
        if n > 1 {
            st.fail = Some((code.clone(), n - 1));
        }
        if n > 0 {
            drop(st);
            return match code.as_str() {
                c if c.starts_with("isv.") => business_error(c, "simulated failure"),
                c if c.starts_with("isp.") || c == "ServiceUnavailable" => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    error_body(c, "simulated failure"),
                ),
                c => (StatusCode::BAD_REQUEST, error_body(c, "simulated failure")),
            };
        }
    }
    st.counter += 1;
    let biz_id = format!("{:012}{:06}^0", 900_000_000_000u64 + st.counter, st.counter);
    st.sent.push(AliyunSent {
        phone_numbers: phones,
        sign_name: get("SignName").to_owned(),
        template_code: get("TemplateCode").to_owned(),
        template_param,
        out_id: params.get("OutId").cloned(),
        biz_id: biz_id.clone(),
        received_at: SystemTime::now(),
    });
    (
        StatusCode::OK,
        json!({ "Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": request_id() }),
    )
}
