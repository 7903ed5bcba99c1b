//! What the simulator remembers between requests.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::Rng;

use super::{RecordedNotice, SimConfig, SimDept, SimUser};

/// State shared by the handlers and the [`super::DingTalkSimulator`] handle.
pub(super) struct Shared {
    pub config: SimConfig,
    /// Departments including the root.
    pub departments: Vec<SimDept>,
    state: Mutex<State>,
    pub down: AtomicBool,
    pub token_fetches: AtomicUsize,
    pub requests: AtomicUsize,
    pub notices_changed: tokio::sync::Notify,
    /// Members who left the organisation (`DingTalkSimulator::leave`); a lock
    /// of its own, so handlers holding [`Shared::state`] may look members up.
    pub left: Mutex<HashSet<String>>,
}

/// One work notice task's outcome per recipient.
#[derive(Clone, Debug, Default)]
pub(super) struct TaskResult {
    pub read: Vec<String>,
    pub unread: Vec<String>,
    pub forbidden: Vec<String>,
    pub invalid: Vec<String>,
    pub invalid_depts: Vec<i64>,
}

#[derive(Default)]
pub(super) struct State {
    /// App token → expiry.
    pub app_tokens: HashMap<String, Instant>,
    /// User token → (userid, expiry).
    pub user_tokens: HashMap<String, (String, Instant)>,
    /// Refresh token → userid.
    pub refresh_tokens: HashMap<String, String>,
    /// Login code → (userid, expiry).
    pub codes: HashMap<String, (String, Instant)>,
    pub notices: Vec<RecordedNotice>,
    pub results: HashMap<i64, TaskResult>,
    /// (userid, msg JSON, day) already delivered.
    pub delivered: HashSet<(String, String, String)>,
    pub next_task_id: i64,
    /// (calls left, errcode).
    pub fail_next: (u32, i64),
    /// `topapi` calls answered normally before `fail_next` begins.
    pub fail_skip: u32,
    pub latency: Duration,
    pub current_user: Option<String>,
}

impl Shared {
    pub fn new(config: SimConfig) -> Shared {
        let mut departments = config.departments.clone();
        if !departments.iter().any(|d| d.dept_id == crate::directory::ROOT_DEPT_ID) {
            departments.insert(0, SimDept { dept_id: crate::directory::ROOT_DEPT_ID, name: format!("{} (root)", config.corp_id), parent_id: 0 });
        }
        let state = State { next_task_id: 700_000_001, current_user: config.current_user.clone(), ..State::default() };
        Shared {
            config,
            departments,
            state: Mutex::new(state),
            down: AtomicBool::new(false),
            token_fetches: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            notices_changed: tokio::sync::Notify::new(),
            left: Mutex::default(),
        }
    }

    /// The state, even if a handler panicked while holding it.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The organisation's members now: the configured ones who have not left.
    pub fn members(&self) -> impl Iterator<Item = &SimUser> {
        let left = self.left.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.config.users.iter().filter(move |u| !left.contains(&u.userid))
    }

    pub fn user(&self, userid: &str) -> Option<&SimUser> {
        self.members().find(|u| u.userid == userid)
    }

    /// A DingTalk account that can log in: a member or an outsider.
    pub fn account(&self, userid: &str) -> Option<&SimUser> {
        self.user(userid).or_else(|| self.config.outsiders.iter().find(|u| u.userid == userid))
    }

    pub fn dept(&self, dept_id: i64) -> Option<&SimDept> {
        self.departments.iter().find(|d| d.dept_id == dept_id)
    }
}

/// A random token of 32 hex digits.
pub(super) fn random_token() -> String {
    let bytes: [u8; 16] = rand::thread_rng().r#gen();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
