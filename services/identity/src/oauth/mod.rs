//! oxide-auth, adapted: database-backed primitives, the warp adapter for
//! oxide-auth's request and response traits, and the per-request endpoint.

mod endpoint;
mod grant;
mod primitives;
mod web;
mod writer;

pub use endpoint::{HubEndpoint, Solicitor};
pub use grant::{FAMILY_EXT, LOGIN_EXT, StoredGrant};
pub use primitives::{DbAuthorizer, DbIssuer, DbRegistrar, Flow};
pub(crate) use primitives::revoke_family;
pub use web::{OAuthFailure, OAuthRequest, OAuthResponse};
pub use writer::TokenWriter;
