//! The admin API for registered clients, for the city's operations tools
//! (bearer token with scope `admin:clients`):
//! - `GET /api/admin/clients`: every client (no secrets);
//! - `GET /api/admin/clients/{client_id}`: one;
//! - `PUT /api/admin/clients/{client_id}/mfa` with `{"mfa": "required" | "optional"}`:
//!   whether logins to it need a second factor (as `client add --require-mfa` sets).
//!   Making it required revokes the tokens the client holds (`revoked_tokens`
//!   says how many), so every session there signs in again with two factors.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::audit::Actor;
use crate::bearer::reply;
use crate::http::{authorization, limited_body, with_identity};
use crate::{Client, Identity};

/// The scope the admin API needs.
pub const ADMIN_CLIENTS_SCOPE: &str = "admin:clients";
/// The largest body the admin API accepts.
const MAX_BODY: u64 = 4 * 1024;

/// A client as the admin API shows it.
fn view(c: &Client) -> Value {
    json!({
        "client_id": c.client_id,
        "public": c.public,
        "first_party": c.first_party,
        "redirect_uris": c.redirect_uris,
        "post_logout_redirect_uris": c.post_logout_redirect_uris,
        "backchannel_logout_uri": c.backchannel_logout_uri,
        "id_token_signed_response_alg": c.id_token_alg,
        "scopes": c.extra_scopes,
        "mfa": if c.require_mfa { "required" } else { "optional" },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaPolicy {
    mfa: String,
}

/// The caller, if its token has the admin scope and it is a system (client
/// credentials) or a person with the `admin` role: a console that people sign
/// in to gets the scope for everyone who signs in, so the scope alone is not
/// enough for a person.
async fn administrator(id: &Identity, auth: Option<String>) -> Result<crate::bearer::Principal, Response> {
    let caller = reply::authorize(id, auth, ADMIN_CLIENTS_SCOPE).await?;
    if let Some(user_id) = &caller.user_id {
        match id.users.get(user_id).await {
            Ok(user) if user.roles.iter().any(|r| r == "admin") => {}
            Ok(_) => return Err(reply::error(StatusCode::FORBIDDEN, "insufficient_role", "the admin API is for administrators (role admin) and systems")),
            Err(e) => return Err(reply::internal("reading the caller", e)),
        }
    }
    Ok(caller)
}

/// Every admin-API route.
pub fn filter(id: Arc<Identity>) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let list = warp::path!("api" / "admin" / "clients")
        .and(warp::get())
        .and(authorization())
        .and(with_identity(id.clone()))
        .then(|auth: Option<String>, id: Arc<Identity>| async move {
            if let Err(r) = administrator(&id, auth).await {
                return r;
            }
            match id.clients.list().await {
                Ok(all) => reply::json(StatusCode::OK, &json!({ "clients": all.iter().map(view).collect::<Vec<_>>() })),
                Err(e) => reply::internal("listing clients", e),
            }
        });
    let one = warp::path!("api" / "admin" / "clients" / String)
        .and(warp::get())
        .and(authorization())
        .and(with_identity(id.clone()))
        .then(|client_id: String, auth: Option<String>, id: Arc<Identity>| async move {
            if let Err(r) = administrator(&id, auth).await {
                return r;
            }
            match id.clients.get(&client_id).await {
                Ok(Some(c)) => reply::json(StatusCode::OK, &view(&c)),
                Ok(None) => reply::error(StatusCode::NOT_FOUND, "not_found", &format!("no client {client_id}")),
                Err(e) => reply::internal("reading a client", e),
            }
        });
    let mfa = warp::path!("api" / "admin" / "clients" / String / "mfa")
        .and(warp::put())
        .and(authorization())
        .and(limited_body(MAX_BODY))
        .and(with_identity(id))
        .then(set_mfa);
    list.or(one).unify().or(mfa).unify()
}

async fn set_mfa(client_id: String, auth: Option<String>, body: bytes::Bytes, id: Arc<Identity>) -> Response {
    let caller = match administrator(&id, auth).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let required = match serde_json::from_slice::<MfaPolicy>(&body) {
        Ok(p) if p.mfa == "required" => true,
        Ok(p) if p.mfa == "optional" => false,
        Ok(p) => return reply::error(StatusCode::BAD_REQUEST, "invalid_request", &format!("mfa must be \"required\" or \"optional\", not {:?}", p.mfa)),
        Err(e) => return reply::error(StatusCode::BAD_REQUEST, "invalid_request", &format!("expected {{\"mfa\": \"required\" | \"optional\"}}: {e}")),
    };
    let changed = async {
        let Some(revoked) = id.clients.set_require_mfa(&client_id, required).await? else { return Ok(None) };
        id.audit
            .record(
                "client.mfa_policy",
                Actor { user_id: caller.user_id.as_deref(), client_id: Some(&caller.client_id), ip: None },
                json!({ "client": client_id, "mfa": if required { "required" } else { "optional" }, "revoked_tokens": revoked }),
            )
            .await?;
        Ok::<_, crate::Error>(id.clients.get(&client_id).await?.map(|c| (c, revoked)))
    };
    match changed.await {
        Ok(Some((c, revoked))) => {
            let mut body = view(&c);
            body["revoked_tokens"] = json!(revoked);
            reply::json(StatusCode::OK, &body)
        }
        Ok(None) => reply::error(StatusCode::NOT_FOUND, "not_found", &format!("no client {client_id}")),
        Err(e) => reply::internal("setting a client's MFA policy", e),
    }
}
