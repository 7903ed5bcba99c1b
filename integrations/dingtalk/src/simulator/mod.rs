//! A local DingTalk for tests: one HTTP server on 127.0.0.1 that answers as
//! `api.dingtalk.com`, `oapi.dingtalk.com` and `login.dingtalk.com` do, with their
//! request and error shapes.
//!
//! Served: `POST /v1.0/oauth2/accessToken`, `GET /gettoken`,
//! `POST /topapi/message/corpconversation/{asyncsend_v2,getsendresult,getsendprogress}`,
//! `GET /oauth2/auth` (auto-approves as the "current user" and redirects with
//! `authCode` and `state`), `POST /v1.0/oauth2/userAccessToken` (codes single use),
//! `GET /v1.0/contact/users/me`, and `POST /topapi/v2/department/{listsub,get}`,
//! `/topapi/v2/user/{list,get}`, `/topapi/user/getbyunionid`.
//!
//! Behaviour worth knowing: app tokens expire after [`SimConfig::token_ttl`]; an
//! unknown token answers errcode 40014 and an expired one errcode 88 (sub_code
//! 42001); a wrong `agent_id` answers 40056 (the simulator's choice); an unknown
//! userid lands in the task's invalid list; the same content to the same user twice
//! in a (UTC) day lands in its forbidden list. [`DingTalkSimulator::fail_next`]
//! makes the next `topapi` calls (after their token check) answer an errcode.

mod handlers;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use url::Url;

use crate::config::DingTalkConfig;
use crate::error::Result;
use crate::notice::WorkMessage;
use state::Shared;

/// A member of the simulated organisation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimUser {
    /// Userid (work notice recipient).
    pub userid: String,
    /// Unionid (the login's `unionId`).
    pub unionid: String,
    /// Name (also the login's `nick`).
    pub name: String,
    /// Mobile number.
    pub mobile: String,
    /// E-mail address.
    pub email: String,
    /// Departments the user is a direct member of.
    pub dept_ids: Vec<i64>,
    /// Staff number.
    pub job_number: String,
    /// Job title.
    pub title: String,
}

/// A department of the simulated organisation (the root, 1, exists without being listed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimDept {
    /// Its id.
    pub dept_id: i64,
    /// Its name.
    pub name: String,
    /// Its parent (1 for top-level departments).
    pub parent_id: i64,
}

/// The corpId in the login tokens of [`SimConfig::outsiders`].
pub const OUTSIDE_CORP: &str = "dingoutsidecorp";

/// What the simulated DingTalk knows.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The app's AppKey.
    pub app_key: String,
    /// The app's AppSecret.
    pub app_secret: String,
    /// The app's AgentId.
    pub agent_id: i64,
    /// The organisation's corpId.
    pub corp_id: String,
    /// Members.
    pub users: Vec<SimUser>,
    /// DingTalk accounts of other organisations: they can log in (their
    /// token names [`OUTSIDE_CORP`]), but the organisation does not know them.
    pub outsiders: Vec<SimUser>,
    /// Departments besides the root.
    pub departments: Vec<SimDept>,
    /// Lifetime of app and user access tokens (7200 s).
    pub token_ttl: Duration,
    /// Who `/oauth2/auth` logs in (a userid); `None` means the first user.
    pub current_user: Option<String>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            app_key: "dingsimappkey".into(),
            app_secret: "sim-app-secret".into(),
            agent_id: 100_001,
            corp_id: "dingsimcorp".into(),
            users: Vec::new(),
            outsiders: Vec::new(),
            departments: Vec::new(),
            token_ttl: Duration::from_secs(7200),
            current_user: None,
        }
    }
}

/// A work notice the simulator accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedNotice {
    /// The task id it answered.
    pub task_id: i64,
    /// `agent_id` as sent.
    pub agent_id: i64,
    /// `userid_list` as sent.
    pub userids: Vec<String>,
    /// `dept_id_list` as sent.
    pub dept_ids: Vec<i64>,
    /// `msg`.
    pub msg: WorkMessage,
    /// When the simulator accepted it (for latency measurements).
    pub received_at: std::time::SystemTime,
}

/// A running simulated DingTalk. Dropping it stops the server.
pub struct DingTalkSimulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for DingTalkSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DingTalkSimulator").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl DingTalkSimulator {
    /// Starts a simulator on 127.0.0.1, port chosen by the system.
    pub async fn start(config: SimConfig) -> Result<DingTalkSimulator> {
        let shared = Arc::new(Shared::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let routes = handlers::routes(shared.clone());
        let task = tokio::spawn(async move {
            warp::serve(routes)
                .incoming(listener)
                .graceful(async {
                    let _ = stopped.await;
                })
                .run()
                .await;
        });
        Ok(DingTalkSimulator { addr, shared, stop: Some(stop), task: Some(task) })
    }

    /// `http://127.0.0.1:<port>/`: the api, oapi and login base alike.
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("a socket address forms a URL")
    }

    /// A client configuration for this simulator's app, all bases pointing here.
    pub fn client_config(&self) -> DingTalkConfig {
        let c = &self.shared.config;
        let mut config = DingTalkConfig::new(c.app_key.clone(), c.app_secret.clone(), c.agent_id).with_base(&self.base_url());
        config.corp_id = Some(c.corp_id.clone());
        config
    }

    /// The work notices accepted so far, oldest first.
    pub fn notices(&self) -> Vec<RecordedNotice> {
        self.shared.state().notices.clone()
    }

    /// Waits until at least `n` notices were accepted or `timeout` passes; returns them all.
    pub async fn wait_for_notices(&self, n: usize, timeout: Duration) -> Vec<RecordedNotice> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.notices_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let notices = self.notices();
            if notices.len() >= n || tokio::time::timeout_at(deadline, notified).await.is_err() {
                return if notices.len() >= n { notices } else { self.notices() };
            }
        }
    }

    /// The next `n` `topapi` calls (after their token check) answer `errcode`,
    /// e.g. 143103 (rate limit) or -1 (system busy).
    pub fn fail_next(&self, n: u32, errcode: i64) {
        self.fail_after(0, n, errcode);
    }

    /// After `skip` more `topapi` calls answered normally, the next `n` answer
    /// `errcode`: a failure in the middle of a directory walk.
    pub fn fail_after(&self, skip: u32, n: u32, errcode: i64) {
        let mut state = self.shared.state();
        state.fail_skip = skip;
        state.fail_next = (n, errcode);
    }

    /// While down, every request is answered 503. See [`DingTalkSimulator::stop`]
    /// for a refused connection.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.state().latency = latency;
    }

    /// How many app tokens were handed out (both token endpoints).
    pub fn token_fetches(&self) -> usize {
        self.shared.token_fetches.load(Ordering::SeqCst)
    }

    /// How many requests arrived.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Makes every app and user token issued so far expired.
    pub fn expire_tokens(&self) {
        let mut state = self.shared.state();
        let past = std::time::Instant::now();
        state.app_tokens.values_mut().for_each(|t| *t = past);
        state.user_tokens.values_mut().for_each(|t| t.1 = past);
    }

    /// Who `/oauth2/auth` logs in from now on.
    pub fn set_current_user(&self, userid: &str) {
        self.shared.state().current_user = Some(userid.to_owned());
    }

    /// The member `userid` leaves the organisation: DingTalk no longer knows
    /// them as a member (`user/get` answers 60121) until [`DingTalkSimulator::rejoin`].
    pub fn leave(&self, userid: &str) {
        self.shared.left.lock().unwrap_or_else(|e| e.into_inner()).insert(userid.to_owned());
    }

    /// The member `userid` is back.
    pub fn rejoin(&self, userid: &str) {
        self.shared.left.lock().unwrap_or_else(|e| e.into_inner()).remove(userid);
    }

    /// Marks the notice `task_id` read by `userid`.
    pub fn mark_read(&self, task_id: i64, userid: &str) {
        if let Some(result) = self.shared.state().results.get_mut(&task_id)
            && let Some(i) = result.unread.iter().position(|u| u == userid)
        {
            let u = result.unread.remove(i);
            result.read.push(u);
        }
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

impl Drop for DingTalkSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
