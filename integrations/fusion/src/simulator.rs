//! A local voice gateway for tests, speaking the contract documented on [`crate::VoiceGateway`].
//!
//! It checks the bearer key, records every call, answers the same `callId` for a
//! repeated `outId`, and reports `pending` until [`VoiceSimConfig::settle_after`]
//! has passed, then the configured outcome (answered by default).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use url::Url;
use warp::Filter;
use warp::http::{HeaderMap, Method, Response, StatusCode};

use crate::error::Result;
use crate::event::is_phone_number;
use crate::voice::{VoiceConfig, VoiceState};

/// How the simulated gateway behaves.
#[derive(Clone, Debug)]
pub struct VoiceSimConfig {
    /// The key clients must present.
    pub api_key: String,
    /// How long a call stays `pending` (1 s).
    pub settle_after: Duration,
    /// How calls end (answered).
    pub outcome: VoiceState,
    /// Seconds an answered call lasts (12).
    pub answered_secs: u32,
}

impl Default for VoiceSimConfig {
    fn default() -> VoiceSimConfig {
        VoiceSimConfig { api_key: "sim-voice-key".into(), settle_after: Duration::from_secs(1), outcome: VoiceState::Answered, answered_secs: 12 }
    }
}

/// A call the simulator accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedCall {
    /// The id it answered.
    pub call_id: String,
    /// `callee`.
    pub callee: String,
    /// `caller`.
    pub caller: String,
    /// `tts`.
    pub tts: String,
    /// `outId`.
    pub out_id: String,
}

struct Call {
    record: RecordedCall,
    placed: Instant,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    fail_next: u32,
    outcome: Option<VoiceState>,
    outcome_for: HashMap<String, VoiceState>,
}

struct Shared {
    config: VoiceSimConfig,
    state: Mutex<State>,
    down: AtomicBool,
    requests: AtomicUsize,
    next_id: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running simulated voice gateway. Dropping it stops the server.
pub struct VoiceSimulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for VoiceSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceSimulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl VoiceSimulator {
    /// Starts a simulator on 127.0.0.1, port chosen by the system.
    pub async fn start(config: VoiceSimConfig) -> Result<VoiceSimulator> {
        let shared = Arc::new(Shared { config, state: Mutex::new(State::default()), down: AtomicBool::new(false), requests: AtomicUsize::new(0), next_id: AtomicU64::new(1) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let routes = routes(shared.clone());
        let task = tokio::spawn(async move {
            warp::serve(routes)
                .incoming(listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run()
                .await;
        });
        Ok(VoiceSimulator { addr, shared, stop: Some(stop), task: Some(task) })
    }

    /// `http://127.0.0.1:<port>/`.
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("a socket address forms a URL")
    }

    /// A client configuration with the right key, calling from `12345`.
    pub fn client_config(&self) -> VoiceConfig {
        VoiceConfig::new(self.base_url(), self.shared.config.api_key.clone(), "12345")
    }

    /// The calls accepted so far, oldest first.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.state().calls.iter().map(|c| c.record.clone()).collect()
    }

    /// How many requests arrived.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// The next `n` requests with a good key answer 500 `InternalError`.
    pub fn fail_next(&self, n: u32) {
        self.shared.state().fail_next = n;
    }

    /// While down, every request is answered 503 `ServiceUnavailable`.
    /// See [`VoiceSimulator::stop`] for a refused connection.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// How calls end from now on (those already placed included).
    pub fn set_outcome(&self, outcome: VoiceState) {
        self.shared.state().outcome = Some(outcome);
    }

    /// How calls to `callee` end.
    pub fn set_outcome_for(&self, callee: &str, outcome: VoiceState) {
        self.shared.state().outcome_for.insert(callee.to_owned(), outcome);
    }

    /// Stops the server: connections are refused from now on.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for VoiceSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn routes(shared: Arc<Shared>) -> impl Filter<Extract = (Response<String>,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::method().and(warp::path::full()).and(warp::header::headers_cloned()).and(warp::body::bytes()).then(
        move |method: Method, path: warp::path::FullPath, headers: HeaderMap, body: warp::hyper::body::Bytes| {
            let shared = shared.clone();
            async move { handle(&shared, &method, path.as_str(), &headers, &body) }
        },
    )
}

fn answer(status: StatusCode, value: Value) -> Response<String> {
    let mut response = Response::new(value.to_string());
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", warp::http::HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<String> {
    answer(status, json!({"code": code, "message": message}))
}

fn handle(shared: &Shared, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Response<String> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "simulated outage");
    }
    let expected = format!("Bearer {}", shared.config.api_key);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "Unauthorized", "missing or wrong API key");
    }
    {
        let mut state = shared.state();
        if state.fail_next > 0 {
            state.fail_next -= 1;
            return error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "simulated failure");
        }
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["v1", "voice", "notify"]) => notify(shared, body),
        (&Method::GET, ["v1", "voice", "calls", id]) => status(shared, id),
        _ => error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint"),
    }
}

fn notify(shared: &Shared, body: &[u8]) -> Response<String> {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) else {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "body must be a JSON object");
    };
    let field = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned).unwrap_or_default();
    let (callee, caller, tts, out_id) = (field("callee"), field("caller"), field("tts"), field("outId"));
    if !is_phone_number(&callee) {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "callee must be a phone number");
    }
    if caller.is_empty() || tts.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", "caller and tts are required");
    }
    let mut state = shared.state();
    if !out_id.is_empty()
        && let Some(existing) = state.calls.iter().find(|c| c.record.out_id == out_id)
    {
        return answer(StatusCode::OK, json!({"code": "OK", "callId": existing.record.call_id}));
    }
    let call_id = format!("v-{:08}", shared.next_id.fetch_add(1, Ordering::SeqCst));
    state.calls.push(Call { record: RecordedCall { call_id: call_id.clone(), callee, caller, tts, out_id }, placed: Instant::now() });
    answer(StatusCode::OK, json!({"code": "OK", "callId": call_id}))
}

fn status(shared: &Shared, call_id: &str) -> Response<String> {
    let state = shared.state();
    let Some(call) = state.calls.iter().find(|c| c.record.call_id == call_id) else {
        return error(StatusCode::NOT_FOUND, "NotFound", "no such call");
    };
    let outcome = state.outcome_for.get(&call.record.callee).copied().or(state.outcome).unwrap_or(shared.config.outcome);
    let (state, duration) = if call.placed.elapsed() < shared.config.settle_after {
        (VoiceState::Pending, 0)
    } else if outcome == VoiceState::Answered {
        (outcome, shared.config.answered_secs)
    } else {
        (outcome, 0)
    };
    answer(StatusCode::OK, json!({"code": "OK", "callId": call_id, "state": state, "durationSecs": duration}))
}
