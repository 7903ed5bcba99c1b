//! The knowledge base's HTTP API (paths and fields are a contract with
//! government websites and scripts).
//!
//! - `GET /api/public/kb/search`, `GET /api/public/kb/suggest`: public,
//!   CORS for configured website origins, rate-limited per source address.
//! - `GET /api/kb/search`, `GET /api/kb/entries/{id}` (+ `/versions`): scope `kb:read`.
//! - `POST /api/kb/entries`, `PUT /api/kb/entries/{id}`,
//!   `POST /api/kb/entries/{id}/publish|expire`: scope `kb:write`.

use std::sync::Arc;

use civichub_identity::{Identity, Principal};
use serde::Deserialize;
use serde_json::json;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::entry::{EntryInput, Status};
use crate::index::{SearchRequest, Visibility};
use crate::{Error, KnowledgeBase};

/// Largest entry body accepted by the write API.
const MAX_ENTRY_BYTES: u64 = 256 * 1024;

/// How the public endpoints are exposed.
#[derive(Clone, Debug, Default)]
pub struct ApiSettings {
    /// Website origins allowed to call the public endpoints from a browser.
    pub cors_origins: Vec<String>,
    /// Requests per minute per source address on the public endpoints (0: no limit).
    pub public_requests_per_minute: u32,
}

use civichub_identity::reply::{error, json as json_reply};

fn from_error(e: Error) -> Response {
    match e {
        Error::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid_request", &m),
        Error::NotFound(id) => error(StatusCode::NOT_FOUND, "not_found", &format!("entry {id} not found")),
        Error::Conflict(id) => error(StatusCode::CONFLICT, "conflict", &format!("entry {id} already exists")),
        other => civichub_identity::reply::internal("knowledge base", other),
    }
}

#[derive(Deserialize, Default)]
struct SearchParams {
    q: Option<String>,
    category: Option<String>,
    department: Option<String>,
    page: Option<String>,
    size: Option<String>,
}

/// The longest text completed by `suggest`.
const MAX_SUGGEST_CHARS: usize = 50;

fn parse_search(p: SearchParams) -> Result<SearchRequest, Response> {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "invalid_request", m);
    let q = p.q.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty()).ok_or_else(|| bad("q is required: give the words to search for"))?;
    if q.chars().count() > crate::MAX_QUERY_CHARS {
        return Err(bad(&format!("q is longer than {} characters", crate::MAX_QUERY_CHARS)));
    }
    let page = match p.page.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => 1,
        Some(s) => s.parse::<usize>().ok().filter(|n| (1..=10_000).contains(n)).ok_or_else(|| bad("page must be a whole number from 1"))?,
    };
    let size = match p.size.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => 10,
        Some(s) => s.parse::<usize>().ok().filter(|n| (1..=100).contains(n)).ok_or_else(|| bad("size must be a whole number from 1 to 100"))?,
    };
    let nonempty = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    Ok(SearchRequest { q, category: nonempty(p.category), department: nonempty(p.department), page, size })
}

fn search(kb: &KnowledgeBase, params: SearchParams, visibility: Visibility) -> Response {
    let request = match parse_search(params) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    match crate::blocking(|| kb.index.search(&request, visibility, civichub_store::now())) {
        Ok(response) => json_reply(StatusCode::OK, &json!(response)),
        Err(e) => from_error(e),
    }
}

fn query_params() -> impl Filter<Extract = (SearchParams,), Error = std::convert::Infallible> + Clone {
    warp::query::<SearchParams>().or(warp::any().map(SearchParams::default)).unify()
}

type Shared = (Arc<KnowledgeBase>, Arc<Identity>);

fn with(shared: Shared) -> impl Filter<Extract = (Shared,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || shared.clone())
}

async fn authorize(id: &Identity, auth: Option<String>, scope: &str) -> Result<Principal, Response> {
    civichub_identity::reply::authorize(id, auth, scope).await
}

fn parse_entry(body: &[u8]) -> Result<EntryInput, Response> {
    serde_json::from_slice::<EntryInput>(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_request", &format!("malformed entry JSON: {e}")))
}

/// Every knowledge-base endpoint.
pub fn routes(kb: Arc<KnowledgeBase>, id: Arc<Identity>, settings: ApiSettings) -> BoxedFilter<(Response,)> {
    let shared: Shared = (kb, id);
    let limiter = Arc::new(civichub_identity::RateLimiter::new(settings.public_requests_per_minute));
    let auth = warp::header::optional::<String>("authorization");

    let limited = civichub_identity::rate_limit(limiter);
    let public_search = warp::path!("api" / "public" / "kb" / "search")
        .and(warp::get())
        .and(limited.clone())
        .and(query_params())
        .and(with(shared.clone()))
        .map(|blocked: Option<Response>, params, (kb, _): Shared| blocked.unwrap_or_else(|| search(&kb, params, Visibility::Public)));
    let suggest = warp::path!("api" / "public" / "kb" / "suggest")
        .and(warp::get())
        .and(limited)
        .and(query_params())
        .and(with(shared.clone()))
        .map(|blocked: Option<Response>, params: SearchParams, (kb, _): Shared| {
            if let Some(r) = blocked {
                return r;
            }
            let q = params.q.unwrap_or_default();
            if q.trim().is_empty() {
                return error(StatusCode::BAD_REQUEST, "invalid_request", "q is required");
            }
            if q.chars().count() > MAX_SUGGEST_CHARS {
                return error(StatusCode::BAD_REQUEST, "invalid_request", "q is longer than 50 characters: suggestions complete what is being typed");
            }
            match crate::blocking(|| kb.index.suggest(&q, Visibility::Public, 8, civichub_store::now())) {
                Ok(titles) => json_reply(StatusCode::OK, &json!({ "suggestions": titles })),
                Err(e) => from_error(e),
            }
        });
    let public = public_search.or(suggest).unify();
    let public: BoxedFilter<(Response,)> = if settings.cors_origins.is_empty() {
        public.boxed()
    } else {
        let cors = warp::cors()
            .allow_origins(settings.cors_origins.iter().map(String::as_str))
            .allow_methods(vec!["GET"])
            .allow_headers(vec!["content-type"])
            .max_age(600);
        public.with(cors).map(Reply::into_response).boxed()
    };

    let agent_search = warp::path!("api" / "kb" / "search")
        .and(warp::get())
        .and(auth)
        .and(query_params())
        .and(with(shared.clone()))
        .then(|auth: Option<String>, params, (kb, id): Shared| async move {
            match authorize(&id, auth, "kb:read").await {
                Ok(_) => search(&kb, params, Visibility::Internal),
                Err(r) => r,
            }
        });
    let get_entry = warp::path!("api" / "kb" / "entries" / String)
        .and(warp::get())
        .and(auth)
        .and(with(shared.clone()))
        .then(|entry_id: String, auth: Option<String>, (kb, id): Shared| async move {
            if let Err(r) = authorize(&id, auth, "kb:read").await {
                return r;
            }
            match kb.entries.get(&entry_id).await {
                Ok(Some(entry)) => json_reply(StatusCode::OK, &json!(entry)),
                Ok(None) => from_error(Error::NotFound(entry_id)),
                Err(e) => from_error(e),
            }
        });
    let versions = warp::path!("api" / "kb" / "entries" / String / "versions")
        .and(warp::get())
        .and(auth)
        .and(with(shared.clone()))
        .then(|entry_id: String, auth: Option<String>, (kb, id): Shared| async move {
            if let Err(r) = authorize(&id, auth, "kb:read").await {
                return r;
            }
            match kb.entries.versions(&entry_id).await {
                Ok(v) if v.is_empty() => from_error(Error::NotFound(entry_id)),
                Ok(v) => json_reply(StatusCode::OK, &json!({ "versions": v })),
                Err(e) => from_error(e),
            }
        });
    let create = warp::path!("api" / "kb" / "entries")
        .and(warp::post())
        .and(auth)
        .and(civichub_identity::limited_body(MAX_ENTRY_BYTES))
        .and(with(shared.clone()))
        .then(|auth: Option<String>, body: bytes::Bytes, (kb, id): Shared| async move {
            let principal = match authorize(&id, auth, "kb:write").await {
                Ok(p) => p,
                Err(r) => return r,
            };
            let valid = match parse_entry(&body).map(|e| e.validate(Status::Draft)) {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return from_error(e),
                Err(r) => return r,
            };
            match kb.create(valid, Some(&principal.subject)).await {
                Ok(entry) => json_reply(StatusCode::CREATED, &json!(entry)),
                Err(e) => from_error(e),
            }
        });
    let update = warp::path!("api" / "kb" / "entries" / String)
        .and(warp::put())
        .and(auth)
        .and(civichub_identity::limited_body(MAX_ENTRY_BYTES))
        .and(with(shared.clone()))
        .then(|entry_id: String, auth: Option<String>, body: bytes::Bytes, (kb, id): Shared| async move {
            let principal = match authorize(&id, auth, "kb:write").await {
                Ok(p) => p,
                Err(r) => return r,
            };
            let mut input = match parse_entry(&body) {
                Ok(i) => i,
                Err(r) => return r,
            };
            if input.id.as_deref().is_some_and(|given| given != entry_id) {
                return error(StatusCode::BAD_REQUEST, "invalid_request", "the body's id differs from the path's");
            }
            input.id = Some(entry_id.clone());
            let current = match kb.entries.get(&entry_id).await {
                Ok(Some(c)) => c,
                Ok(None) => return from_error(Error::NotFound(entry_id)),
                Err(e) => return from_error(e),
            };
            match input.validate(current.status) {
                Ok(valid) => match kb.update(&entry_id, valid, Some(&principal.subject)).await {
                    Ok(entry) => json_reply(StatusCode::OK, &json!(entry)),
                    Err(e) => from_error(e),
                },
                Err(e) => from_error(e),
            }
        });
    let transition = warp::path!("api" / "kb" / "entries" / String / String)
        .and(warp::post())
        .and(auth)
        .and(with(shared))
        .then(|entry_id: String, action: String, auth: Option<String>, (kb, id): Shared| async move {
            let status = match action.as_str() {
                "publish" => Status::Published,
                "expire" => Status::Expired,
                _ => return error(StatusCode::NOT_FOUND, "not_found", "unknown action: use publish or expire"),
            };
            let principal = match authorize(&id, auth, "kb:write").await {
                Ok(p) => p,
                Err(r) => return r,
            };
            match kb.set_status(&entry_id, status, Some(&principal.subject)).await {
                Ok(entry) => json_reply(StatusCode::OK, &json!(entry)),
                Err(e) => from_error(e),
            }
        });
    public
        .or(agent_search)
        .unify()
        .or(versions)
        .unify()
        .or(get_entry)
        .unify()
        .or(create)
        .unify()
        .or(update)
        .unify()
        .or(transition)
        .unify()
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_parameters_are_checked_with_clear_messages() {
        let p = |q: Option<&str>, page: Option<&str>, size: Option<&str>| SearchParams {
            q: q.map(str::to_owned),
            page: page.map(str::to_owned),
            size: size.map(str::to_owned),
            ..Default::default()
        };
        assert!(parse_search(p(None, None, None)).is_err());
        assert!(parse_search(p(Some("  "), None, None)).is_err());
        assert!(parse_search(p(Some("社保"), None, Some("101"))).is_err());
        assert!(parse_search(p(Some("社保"), Some("0"), None)).is_err());
        let ok = parse_search(p(Some(" 社保 "), Some("2"), Some("100"))).unwrap();
        assert_eq!((ok.q.as_str(), ok.page, ok.size), ("社保", 2, 100));
    }
}
