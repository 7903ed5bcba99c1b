//! The simulator's HTTP surface: one catch-all warp filter and a dispatcher, so
//! every answer (including unknown paths) has DingTalk's shape.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use warp::Filter;
use warp::http::{HeaderMap, Method, Response, StatusCode};

use super::RecordedNotice;
use super::state::{Shared, TaskResult, random_token};
use crate::notice::{MAX_DEPT_IDS, MAX_MSG_BYTES, MAX_USERIDS, WorkMessage};
use crate::transport::as_i64;

/// How long a login code stays valid.
const CODE_TTL: Duration = Duration::from_secs(300);

/// One request, read.
struct Req {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Result<Map<String, Value>, String>,
}

pub(super) fn routes(shared: Arc<Shared>) -> impl Filter<Extract = (Response<String>,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .then(move |method: Method, path: warp::path::FullPath, query: String, headers: HeaderMap, body: warp::hyper::body::Bytes| {
            let shared = shared.clone();
            async move {
                let query = serde_urlencoded::from_str::<Vec<(String, String)>>(&query).unwrap_or_default().into_iter().collect();
                let body = parse_body(&headers, &body);
                let req = Req { method, path: path.as_str().to_owned(), query, headers, body };
                handle(&shared, req).await
            }
        })
}

/// A JSON object body, or a form body as an object of strings; empty is `{}`.
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let is_form = headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| format!("bad form body: {e}"))?;
        return Ok(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("body is not a JSON object".into()),
        Err(e) => Err(format!("body is not JSON: {e}")),
    }
}

async fn handle(shared: &Shared, req: Req) -> Response<String> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let latency = shared.state().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if shared.down.load(Ordering::SeqCst) {
        return api_err(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "simulated outage");
    }
    match (&req.method, req.path.as_str()) {
        (&Method::POST, "/v1.0/oauth2/accessToken") => app_access_token(shared, &req),
        (&Method::GET, "/gettoken") => gettoken(shared, &req),
        (&Method::GET, "/oauth2/auth") => authorize(shared, &req),
        (&Method::POST, "/v1.0/oauth2/userAccessToken") => user_access_token(shared, &req),
        (&Method::GET, "/v1.0/contact/users/me") => me(shared, &req),
        (&Method::POST, p) if p.starts_with("/topapi/") => topapi(shared, &req),
        (_, p) if p.starts_with("/topapi/") || p == "/gettoken" => oapi_err(404, "请求的URI地址不存在"),
        _ => api_err(StatusCode::NOT_FOUND, "InvalidAction.NotFound", "Specified api is not found, please check your url and method."),
    }
}

// ---- answers ----

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response.headers_mut().insert("content-type", v);
    }
    response
}

fn json_response(status: StatusCode, value: Value) -> Response<String> {
    respond(status, "application/json;charset=utf-8", value.to_string())
}

fn request_id() -> String {
    random_token().chars().take(12).collect()
}

/// An `oapi` success: `extra` merged with `errcode` 0.
fn oapi_ok(extra: Value) -> Response<String> {
    let mut body = json!({"errcode": 0, "errmsg": "ok", "request_id": request_id()});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    json_response(StatusCode::OK, body)
}

/// An `oapi` error: HTTP 200 with a non-zero `errcode`.
fn oapi_err(errcode: i64, errmsg: &str) -> Response<String> {
    json_response(StatusCode::OK, json!({"errcode": errcode, "errmsg": errmsg, "request_id": request_id()}))
}

/// An `api` (v1.0) error: HTTP 4xx/5xx with `code`, `message`, `requestid`.
fn api_err(status: StatusCode, code: &str, message: &str) -> Response<String> {
    json_response(status, json!({"code": code, "message": message, "requestid": request_id()}))
}

fn errmsg_for(errcode: i64) -> &'static str {
    match errcode {
        -1 => "系统繁忙",
        90018 => "当前企业调用该接口超过每秒调用上限",
        143103 => "企业单应用消息发送人次QPM超限",
        143104 => "企业每分钟发送人次QPM超限",
        _ => "simulated failure",
    }
}

// ---- parameters ----

fn p_str(p: &Map<String, Value>, key: &str) -> Option<String> {
    match p.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn p_i64(p: &Map<String, Value>, key: &str) -> Option<i64> {
    p.get(key).and_then(as_i64)
}

/// A comma-separated string or an array, as trimmed non-empty items.
fn p_list(p: &Map<String, Value>, key: &str) -> Vec<String> {
    match p.get(key) {
        Some(Value::String(s)) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.trim().to_owned()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::Number(n)) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

// ---- tokens ----

fn issue_app_token(shared: &Shared) -> (String, u64) {
    let token = random_token();
    let ttl = shared.config.token_ttl;
    shared.state().app_tokens.insert(token.clone(), Instant::now() + ttl);
    shared.token_fetches.fetch_add(1, Ordering::SeqCst);
    (token, ttl.as_secs())
}

fn app_access_token(shared: &Shared, req: &Req) -> Response<String> {
    let body = match &req.body {
        Ok(b) => b,
        Err(e) => return api_err(StatusCode::BAD_REQUEST, "InvalidParameter", e),
    };
    let (Some(key), Some(secret)) = (p_str(body, "appKey"), p_str(body, "appSecret")) else {
        return api_err(StatusCode::BAD_REQUEST, "MissingParameter", "appKey and appSecret are required");
    };
    if key != shared.config.app_key || secret != shared.config.app_secret {
        return api_err(StatusCode::BAD_REQUEST, "invalidClientIdOrSecret", "无效的clientId或者clientSecret");
    }
    let (token, ttl) = issue_app_token(shared);
    json_response(StatusCode::OK, json!({"accessToken": token, "expireIn": ttl}))
}

fn gettoken(shared: &Shared, req: &Req) -> Response<String> {
    let key = req.query.get("appkey").map(String::as_str);
    let secret = req.query.get("appsecret").map(String::as_str);
    if key != Some(shared.config.app_key.as_str()) || secret != Some(shared.config.app_secret.as_str()) {
        return oapi_err(40089, "不合法的appKey或appSecret");
    }
    let (token, ttl) = issue_app_token(shared);
    oapi_ok(json!({"access_token": token, "expires_in": ttl}))
}

/// The error answer for a missing, unknown or expired app token, if it is one.
fn check_app_token(shared: &Shared, req: &Req) -> Option<Response<String>> {
    let Some(token) = req.query.get("access_token") else {
        return Some(oapi_err(40014, "不合法的access_token"));
    };
    match shared.state().app_tokens.get(token) {
        None => Some(oapi_err(40014, "不合法的access_token")),
        Some(expiry) if Instant::now() >= *expiry => Some(json_response(
            StatusCode::OK,
            json!({"errcode": 88, "sub_code": "42001", "sub_msg": "access_token已过期", "errmsg": "ding talk error[subcode=42001,submsg=access_token已过期]", "request_id": request_id()}),
        )),
        Some(_) => None,
    }
}

// ---- login ----

fn authorize(shared: &Shared, req: &Req) -> Response<String> {
    let page = |msg: &str| respond(StatusCode::BAD_REQUEST, "text/html;charset=utf-8", format!("<!doctype html><title>DingTalk</title><p>{msg}</p>"));
    if req.query.get("client_id") != Some(&shared.config.app_key) {
        return page("invalid client_id");
    }
    if req.query.get("response_type").map(String::as_str) != Some("code") {
        return page("response_type must be code");
    }
    let Some(mut redirect) = req.query.get("redirect_uri").and_then(|r| url::Url::parse(r).ok()).filter(|u| matches!(u.scheme(), "http" | "https")) else {
        return page("invalid redirect_uri");
    };
    let current = shared.state().current_user.clone().or_else(|| shared.members().next().map(|u| u.userid.clone()));
    let Some(userid) = current.filter(|u| shared.account(u).is_some()) else {
        return page("no user is signed in to the simulator");
    };
    let code = random_token();
    shared.state().codes.insert(code.clone(), (userid, Instant::now() + CODE_TTL));
    {
        let mut q = redirect.query_pairs_mut();
        q.append_pair("authCode", &code);
        if let Some(state) = req.query.get("state") {
            q.append_pair("state", state);
        }
    }
    let mut response = respond(StatusCode::FOUND, "text/plain", String::new());
    if let Ok(v) = redirect.as_str().parse() {
        response.headers_mut().insert("location", v);
    }
    response
}

fn user_access_token(shared: &Shared, req: &Req) -> Response<String> {
    let body = match &req.body {
        Ok(b) => b,
        Err(e) => return api_err(StatusCode::BAD_REQUEST, "InvalidParameter", e),
    };
    if p_str(body, "clientId").as_deref() != Some(&shared.config.app_key) || p_str(body, "clientSecret").as_deref() != Some(&shared.config.app_secret) {
        return api_err(StatusCode::BAD_REQUEST, "invalidClientIdOrSecret", "无效的clientId或者clientSecret");
    }
    let userid = match p_str(body, "grantType").as_deref() {
        Some("authorization_code") => {
            let code = p_str(body, "code").unwrap_or_default();
            // Removed on first use: a code works once.
            match shared.state().codes.remove(&code) {
                Some((userid, expiry)) if Instant::now() < expiry => userid,
                _ => return api_err(StatusCode::BAD_REQUEST, "invalidAuthCode", "不合法的临时授权码"),
            }
        }
        Some("refresh_token") => {
            let refresh = p_str(body, "refreshToken").unwrap_or_default();
            match shared.state().refresh_tokens.remove(&refresh) {
                Some(userid) => userid,
                None => return api_err(StatusCode::BAD_REQUEST, "invalidRefreshToken", "不合法的refresh_token"),
            }
        }
        _ => return api_err(StatusCode::BAD_REQUEST, "invalidGrantType", "grantType must be authorization_code or refresh_token"),
    };
    let corp = if shared.user(&userid).is_some() { shared.config.corp_id.as_str() } else { super::OUTSIDE_CORP };
    let (access, refresh) = (random_token(), random_token());
    let ttl = shared.config.token_ttl;
    {
        let mut state = shared.state();
        state.user_tokens.insert(access.clone(), (userid.clone(), Instant::now() + ttl));
        state.refresh_tokens.insert(refresh.clone(), userid);
    }
    json_response(StatusCode::OK, json!({"accessToken": access, "refreshToken": refresh, "expireIn": ttl.as_secs(), "corpId": corp}))
}

fn me(shared: &Shared, req: &Req) -> Response<String> {
    let token = req.headers.get("x-acs-dingtalk-access-token").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let userid = match shared.state().user_tokens.get(token) {
        Some((userid, expiry)) if Instant::now() < *expiry => userid.clone(),
        _ => return api_err(StatusCode::UNAUTHORIZED, "InvalidAuthentication", "不合法的access_token"),
    };
    let Some(user) = shared.account(&userid) else {
        return api_err(StatusCode::NOT_FOUND, "userNotFound", "用户不存在");
    };
    json_response(
        StatusCode::OK,
        json!({
            "nick": user.name,
            "avatarUrl": format!("https://static.example.invalid/avatar/{}.png", user.userid),
            "mobile": user.mobile,
            "openId": format!("open-{}", user.unionid),
            "unionId": user.unionid,
            "email": user.email,
            "stateCode": "86",
        }),
    )
}

// ---- topapi ----

fn topapi(shared: &Shared, req: &Req) -> Response<String> {
    if let Some(refusal) = check_app_token(shared, req) {
        return refusal;
    }
    {
        let mut state = shared.state();
        if state.fail_skip > 0 {
            state.fail_skip -= 1;
        } else if state.fail_next.0 > 0 {
            state.fail_next.0 -= 1;
            let code = state.fail_next.1;
            return oapi_err(code, errmsg_for(code));
        }
    }
    let body = match &req.body {
        Ok(b) => b,
        Err(e) => return oapi_err(40035, &format!("不合法的参数: {e}")),
    };
    match req.path.as_str() {
        "/topapi/message/corpconversation/asyncsend_v2" => asyncsend(shared, body),
        "/topapi/message/corpconversation/getsendresult" => getsendresult(shared, body),
        "/topapi/message/corpconversation/getsendprogress" => getsendprogress(shared, body),
        "/topapi/v2/department/listsub" => listsub(shared, body),
        "/topapi/v2/department/get" => department_get(shared, body),
        "/topapi/v2/user/list" => user_list(shared, body),
        "/topapi/v2/user/get" => user_get(shared, body),
        "/topapi/user/getbyunionid" => getbyunionid(shared, body),
        _ => oapi_err(404, "请求的URI地址不存在"),
    }
}

fn check_agent(shared: &Shared, body: &Map<String, Value>) -> Option<Response<String>> {
    match p_i64(body, "agent_id") {
        None => Some(oapi_err(40035, "缺少参数 agent_id")),
        Some(a) if a != shared.config.agent_id => Some(oapi_err(40056, "不合法的agentid")),
        Some(_) => None,
    }
}

fn asyncsend(shared: &Shared, body: &Map<String, Value>) -> Response<String> {
    if let Some(refusal) = check_agent(shared, body) {
        return refusal;
    }
    let msg_value = match body.get("msg") {
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
        Some(v @ Value::Object(_)) => Some(v.clone()),
        _ => None,
    };
    let Some(msg_value) = msg_value else {
        return oapi_err(40035, "缺少参数 msg");
    };
    let msg_text = msg_value.to_string();
    if msg_text.len() > MAX_MSG_BYTES {
        return oapi_err(34016, "消息内容长度超过限制");
    }
    let msg = match WorkMessage::from_json(&msg_value) {
        Ok(m) => m,
        Err(e) => return oapi_err(40035, &format!("不合法的参数 msg: {e}")),
    };
    let userids = p_list(body, "userid_list");
    let dept_texts = p_list(body, "dept_id_list");
    let Ok(dept_ids) = dept_texts.iter().map(|d| d.parse::<i64>()).collect::<Result<Vec<_>, _>>() else {
        return oapi_err(40035, "不合法的参数 dept_id_list");
    };
    if userids.len() > MAX_USERIDS || dept_ids.len() > MAX_DEPT_IDS {
        return oapi_err(40035, "接收者数量超过限制");
    }
    if userids.is_empty() && dept_ids.is_empty() {
        return oapi_err(40035, "userid_list、dept_id_list 至少填一个");
    }

    let mut recipients: Vec<String> = Vec::new();
    let mut result = TaskResult::default();
    for d in &dept_ids {
        if shared.dept(*d).is_none() {
            result.invalid_depts.push(*d);
            continue;
        }
        recipients.extend(shared.members().filter(|u| u.dept_ids.contains(d)).map(|u| u.userid.clone()));
    }
    recipients.splice(0..0, userids.iter().cloned());
    let day = chrono::Utc::now().date_naive().to_string();
    let mut state = shared.state();
    let mut seen = std::collections::HashSet::new();
    for userid in recipients {
        if !seen.insert(userid.clone()) {
            continue;
        }
        if shared.user(&userid).is_none() {
            result.invalid.push(userid);
        } else if !state.delivered.insert((userid.clone(), msg_text.clone(), day.clone())) {
            result.forbidden.push(userid);
        } else {
            result.unread.push(userid);
        }
    }
    let task_id = state.next_task_id;
    state.next_task_id += 1;
    state.results.insert(task_id, result);
    state.notices.push(RecordedNotice { task_id, agent_id: shared.config.agent_id, userids, dept_ids, msg, received_at: std::time::SystemTime::now() });
    drop(state);
    shared.notices_changed.notify_waiters();
    oapi_ok(json!({"task_id": task_id}))
}

fn task<'a>(state: &'a super::state::State, body: &Map<String, Value>) -> Option<&'a TaskResult> {
    state.results.get(&p_i64(body, "task_id")?)
}

fn getsendresult(shared: &Shared, body: &Map<String, Value>) -> Response<String> {
    if let Some(refusal) = check_agent(shared, body) {
        return refusal;
    }
    let state = shared.state();
    let Some(r) = task(&state, body) else {
        return oapi_err(40035, "不合法的参数 task_id");
    };
    let forbidden_list: Vec<Value> = r.forbidden.iter().map(|u| json!({"code": "143105", "count": 1, "userid": u})).collect();
    oapi_ok(json!({"send_result": {
        "read_user_id_list": r.read,
        "unread_user_id_list": r.unread,
        "failed_user_id_list": [],
        "forbidden_user_id_list": r.forbidden,
        "forbidden_list": forbidden_list,
        "invalid_user_id_list": r.invalid,
        "invalid_dept_id_list": r.invalid_depts,
    }}))
}

fn getsendprogress(shared: &Shared, body: &Map<String, Value>) -> Response<String> {
    if let Some(refusal) = check_agent(shared, body) {
        return refusal;
    }
    if task(&shared.state(), body).is_none() {
        return oapi_err(40035, "不合法的参数 task_id");
    }
    oapi_ok(json!({"progress": {"progress_in_percent": 100, "status": 2}}))
}

// ---- directory ----

fn dept_json(d: &super::SimDept) -> Value {
    json!({"dept_id": d.dept_id, "name": d.name, "parent_id": d.parent_id})
}

fn user_json(u: &super::SimUser) -> Value {
    json!({
        "userid": u.userid, "unionid": u.unionid, "name": u.name, "mobile": u.mobile, "email": u.email,
        "title": u.title, "job_number": u.job_number, "dept_id_list": u.dept_ids, "active": true, "avatar": "",
    })
}

fn listsub(shared: &Shared, body: &Map<String, Value>) -> Response<String> {
    let Some(parent) = p_i64(body, "dept_id").or(Some(crate::directory::ROOT_DEPT_ID)).filter(|d| shared.dept(*d).is_some()) else {
        return oapi_err(60003, "部门不存在");
    };
    let mut children: Vec<&super::SimDept> = shared.departments.iter().filter(|d| d.parent_id == parent && d.dept_id != parent).collect();
    children.sort_by_key(|d| d.dept_id);
    oapi_ok(json!({"result": children.into_iter().map(dept_json).collect::<Vec<_>>()}))
}

fn department_get(shared: &Shared, body: &Map<String, Value>) -> Response<String> {
    match p_i64(body, "dept_id").and_then(|d| shared.dept(d)) {
        Some(d) => oapi_ok(json!({"result": dept_json(d)})),
        None => oapi_err(60003, "部门不存在"),
    }
}

fn user_list(shared: &Shared, body: &Map<String, Value>) -> Response<String> {
    let Some(dept) = p_i64(body, "dept_id").filter(|d| shared.dept(*d).is_some()) else {
        return oapi_err(60003, "部门不存在");
    };
    let cursor = p_i64(body, "cursor").unwrap_or(0);
    let size = p_i64(body, "size").unwrap_or(0);
    if cursor < 0 || !(1..=100).contains(&size) {
        return oapi_err(40035, "不合法的参数 cursor/size");
    }
    let members: Vec<&super::SimUser> = shared.members().filter(|u| u.dept_ids.contains(&dept)).collect();
    let start = usize::try_from(cursor).unwrap_or(usize::MAX).min(members.len());
    let end = start.saturating_add(size as usize).min(members.len());
    let list: Vec<Value> = members[start..end].iter().map(|u| user_json(u)).collect();
    let has_more = end < members.len();
    let mut result = json!({"has_more": has_more, "list": list});
    if has_more {
        result["next_cursor"] = json!(end);
    }
    oapi_ok(json!({"result": result}))
}

fn user_get(shared: &Shared, body: &Map<String, Value>) -> Response<String> {
    match p_str(body, "userid").and_then(|u| shared.user(&u)) {
        Some(u) => oapi_ok(json!({"result": user_json(u)})),
        None => oapi_err(60121, "找不到该用户"),
    }
}

fn getbyunionid(shared: &Shared, body: &Map<String, Value>) -> Response<String> {
    let unionid = p_str(body, "unionid").unwrap_or_default();
    match shared.members().find(|u| !unionid.is_empty() && u.unionid == unionid) {
        Some(u) => oapi_ok(json!({"result": {"contact_type": 0, "userid": u.userid}})),
        None => oapi_err(60121, "找不到该用户"),
    }
}
