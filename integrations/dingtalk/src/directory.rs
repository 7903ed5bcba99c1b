//! Organisation sync: departments and their members.

use std::collections::{HashSet, VecDeque};

use serde::Deserialize;
use serde_json::json;

use crate::client::{DingTalk, nullable};
use crate::error::{Error, Result};
use crate::transport::{ApiRequest, Gateway};

/// The root department's id.
pub const ROOT_DEPT_ID: i64 = 1;

/// The `errcode` of `topapi/v2/user/get` and `user/getbyunionid` for someone
/// DingTalk does not know as a member (找不到该用户): never one, or one who left.
pub const UNKNOWN_USER: &str = "60121";
/// Most users one page of [`DingTalk::list_users`] may hold.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Most departments [`DingTalk::walk_departments`] collects before giving up.
const MAX_DEPARTMENTS: usize = 100_000;
/// Most pages [`DingTalk::all_users`] reads for one department.
const MAX_PAGES: usize = 10_000;

/// A department.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Department {
    /// Its id (1 is the root).
    pub dept_id: i64,
    /// Its name.
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// Its parent's id (0 for the root).
    #[serde(deserialize_with = "nullable")]
    pub parent_id: i64,
}

/// A member of the organisation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct User {
    /// Id within the organisation (recipient of work notices).
    #[serde(deserialize_with = "nullable")]
    pub userid: String,
    /// Id across the organisation's apps (the login's `unionId`).
    #[serde(deserialize_with = "nullable")]
    pub unionid: String,
    /// Name.
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// Mobile number.
    pub mobile: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Staff number.
    pub job_number: Option<String>,
    /// Departments the user belongs to.
    #[serde(deserialize_with = "nullable")]
    pub dept_id_list: Vec<i64>,
    /// Whether the user has activated DingTalk.
    #[serde(deserialize_with = "nullable")]
    pub active: bool,
    /// Avatar URL.
    pub avatar: Option<String>,
}

/// One page of a department's members.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct UserPage {
    /// Whether another page follows.
    #[serde(deserialize_with = "nullable")]
    pub has_more: bool,
    /// The cursor of the next page.
    pub next_cursor: Option<i64>,
    /// The members on this page.
    #[serde(deserialize_with = "nullable")]
    pub list: Vec<User>,
}

#[derive(Deserialize)]
struct UnionIdAnswer {
    #[serde(default, deserialize_with = "nullable")]
    userid: String,
}

impl DingTalk {
    /// The direct children of department `dept_id`.
    pub async fn list_sub_departments(&self, dept_id: i64) -> Result<Vec<Department>> {
        let request = ApiRequest::post(Gateway::Oapi, "/topapi/v2/department/listsub", json!({"dept_id": dept_id}));
        let list: Option<Vec<Department>> = self.call_result(request).await?;
        Ok(list.unwrap_or_default())
    }

    /// Every department below the root, parents before children, found by walking
    /// [`DingTalk::list_sub_departments`] from department 1.
    pub async fn walk_departments(&self) -> Result<Vec<Department>> {
        let mut seen = HashSet::from([ROOT_DEPT_ID]);
        let mut queue = VecDeque::from([ROOT_DEPT_ID]);
        let mut all = Vec::new();
        while let Some(parent) = queue.pop_front() {
            for dept in self.list_sub_departments(parent).await? {
                if seen.insert(dept.dept_id) {
                    queue.push_back(dept.dept_id);
                    all.push(dept);
                }
            }
            if all.len() > MAX_DEPARTMENTS {
                return Err(Error::Transport(format!("more than {MAX_DEPARTMENTS} departments; stopping the walk")));
            }
        }
        Ok(all)
    }

    /// One page of the members of department `dept_id`: start with cursor 0, then
    /// pass `next_cursor` while `has_more`. `size` is 1 to 100.
    pub async fn list_users(&self, dept_id: i64, cursor: i64, size: u32) -> Result<UserPage> {
        if size == 0 || size > MAX_PAGE_SIZE {
            return Err(Error::Invalid(format!("page size {size} is not between 1 and {MAX_PAGE_SIZE}")));
        }
        let request = ApiRequest::post(Gateway::Oapi, "/topapi/v2/user/list", json!({"dept_id": dept_id, "cursor": cursor, "size": size}));
        let page: Option<UserPage> = self.call_result(request).await?;
        Ok(page.unwrap_or_default())
    }

    /// All direct members of department `dept_id`, every page.
    pub async fn all_users(&self, dept_id: i64) -> Result<Vec<User>> {
        let mut users = Vec::new();
        let mut cursor = 0;
        for _ in 0..MAX_PAGES {
            let page = self.list_users(dept_id, cursor, MAX_PAGE_SIZE).await?;
            users.extend(page.list);
            match (page.has_more, page.next_cursor) {
                (false, _) => return Ok(users),
                (true, Some(next)) if next != cursor => cursor = next,
                (true, _) => return Err(Error::Transport("user/list said has_more without a new next_cursor".into())),
            }
        }
        Err(Error::Transport(format!("department {dept_id} has more than {MAX_PAGES} pages of users")))
    }

    /// The userid of the member with `unionid` (the login's `unionId`).
    pub async fn user_by_unionid(&self, unionid: &str) -> Result<String> {
        if unionid.is_empty() {
            return Err(Error::Invalid("unionid is empty".into()));
        }
        let request = ApiRequest::post(Gateway::Oapi, "/topapi/user/getbyunionid", json!({"unionid": unionid}));
        let answer: UnionIdAnswer = self.call_result(request).await?;
        if answer.userid.is_empty() {
            return Err(Error::Transport("getbyunionid answered without a userid".into()));
        }
        Ok(answer.userid)
    }

    /// The department `dept_id`.
    pub async fn get_department(&self, dept_id: i64) -> Result<Department> {
        let request = ApiRequest::post(Gateway::Oapi, "/topapi/v2/department/get", json!({"dept_id": dept_id, "language": "zh_CN"}));
        self.call_result(request).await
    }

    /// The member `userid`.
    pub async fn get_user(&self, userid: &str) -> Result<User> {
        if userid.is_empty() {
            return Err(Error::Invalid("userid is empty".into()));
        }
        let request = ApiRequest::post(Gateway::Oapi, "/topapi/v2/user/get", json!({"userid": userid, "language": "zh_CN"}));
        self.call_result(request).await
    }
}
