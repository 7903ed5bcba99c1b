//! One module per endpoint; each exposes `filter(identity)`.

pub mod account;
pub mod admin_clients;
pub mod assets;
pub mod authorize;
mod client_auth;
pub mod consent;
pub mod discovery;
pub mod end_session;
pub mod introspect;
pub mod login;
pub mod mfa;
pub mod passkey;
pub mod revoke;
pub mod token;
pub mod upstream;
pub mod userinfo;
