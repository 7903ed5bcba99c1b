//! End-to-end tests: the real `civichub` binary on a free port with a
//! temporary store, driven over HTTP by the `openidconnect` crate as relying
//! party and by a cookie-keeping HTTP client as the browser. Every scenario
//! runs on SQLite and on PostgreSQL.
// A panic is how a test fails: unwrapping is the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod account;
mod admin_cli;
mod code_flow;
mod directory;
mod discovery;
mod federation;
mod kb;
mod logout;
mod messaging;
mod mfa;
mod passkeys;
mod messaging_sms;
mod hotline;
mod sso;
mod tokens;
