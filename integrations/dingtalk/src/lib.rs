//! DingTalk open-platform adapter for CivicHub (app token, work notices, login), with a simulator.
//!
//! - [`DingTalk`]: the client of one enterprise internal app: the app access token
//!   ([`DingTalk::access_token`]), work notices ([`DingTalk::send_work_notice`],
//!   [`DingTalk::send_result`]), staff login ([`DingTalk::authorize_url`],
//!   [`DingTalk::exchange_code`], [`DingTalk::me`]) and the directory
//!   ([`DingTalk::walk_departments`], [`DingTalk::list_users`], …).
//! - [`Transport`]: how a call is authenticated and sent; [`StandardTransport`] is the
//!   public DingTalk's token scheme, and a 政务钉钉 (government edition) signing
//!   transport can be added beside it.
//! - [`CallbackCrypto`]: event callback signatures and AES.
//! - [`simulator::DingTalkSimulator`]: a local DingTalk for tests.

mod callback;
mod client;
mod config;
mod directory;
mod error;
mod login;
mod notice;
pub mod simulator;
mod transport;

pub use callback::{CallbackCrypto, CallbackEvent, EncryptedReply};
pub use client::DingTalk;
pub use config::{DingTalkConfig, Secret};
pub use directory::{Department, MAX_PAGE_SIZE, ROOT_DEPT_ID, UNKNOWN_USER, User, UserPage};
pub use error::{Error, Result};
pub use login::{DingTalkUser, UserToken};
pub use notice::{CardAction, CardButton, MAX_DEPT_IDS, MAX_MSG_BYTES, MAX_USERIDS, SendProgress, SendResult, SendStatus, WorkMessage, WorkNotice};
pub use transport::{ApiRequest, Auth, Gateway, Method, StandardTransport, Transport};
