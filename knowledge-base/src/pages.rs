//! Server-rendered pages: the agent search page (behind SSO) and the
//! embeddable public widget's script.

use std::sync::Arc;

use askama::Template;
use civichub_identity::Identity;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::entry::{Audience, Entry, Status, format_date};
use crate::index::{SearchRequest, SearchResponse, Visibility};
use crate::KnowledgeBase;

const WIDGET_JS: &str = include_str!("../assets/widget.js");
const KB_CSS: &str = include_str!("../assets/kb.css");

#[derive(Deserialize, Default, Clone)]
struct PageQuery {
    q: Option<String>,
    category: Option<String>,
    department: Option<String>,
    page: Option<usize>,
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage<'a> {
    user: &'a str,
    q: &'a str,
    category: Option<&'a str>,
    department: Option<&'a str>,
    error: Option<String>,
    results: Option<SearchResponse>,
    category_links: Vec<(String, u64, String)>,
    department_links: Vec<(String, u64, String)>,
    clear_href: String,
    prev_href: Option<String>,
    next_href: Option<String>,
    /// Carried to each entry, for its way back to these results.
    entry_query: String,
}

#[derive(Template)]
#[template(path = "entry.html")]
struct EntryPage<'a> {
    user: &'a str,
    entry: &'a Entry,
    internal: bool,
    published: bool,
    status: &'a str,
    paragraphs: Vec<&'a str>,
    updated: String,
    from: Option<String>,
    until: Option<String>,
    /// Back to the search the entry was opened from (or to an empty one).
    back: String,
}

/// `q` of an entry page: the search it was opened from.
#[derive(Debug, Default, Deserialize)]
struct EntryQuery {
    q: Option<String>,
}

/// Results per page on the agents' search page.
const PAGE_SIZE: usize = 10;

fn html(status: StatusCode, body: String) -> Response {
    let mut r = warp::reply::with_status(warp::reply::html(body), status).into_response();
    r.headers_mut().insert("cache-control", warp::http::HeaderValue::from_static("no-store"));
    // The hotline workbench shows the search beside its form, in a frame of the same origin.
    r.headers_mut().insert("x-frame-options", warp::http::HeaderValue::from_static("SAMEORIGIN"));
    r
}

fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(body) => html(StatusCode::OK, body),
        Err(e) => {
            tracing::error!("rendering page: {e}");
            html(StatusCode::INTERNAL_SERVER_ERROR, "服务器内部错误".into())
        }
    }
}

fn href(q: &str, category: Option<&str>, department: Option<&str>, page: Option<usize>) -> String {
    let mut pairs: Vec<(&str, String)> = vec![("q", q.to_owned())];
    if let Some(c) = category {
        pairs.push(("category", c.to_owned()));
    }
    if let Some(d) = department {
        pairs.push(("department", d.to_owned()));
    }
    if let Some(p) = page {
        pairs.push(("page", p.to_string()));
    }
    format!("/kb?{}", serde_urlencoded::to_string(pairs).unwrap_or_default())
}

/// The signed-in user's display name, or a redirect to the login page.
async fn signed_in(id: &Identity, cookie: Option<String>, return_to: &str) -> Result<String, Response> {
    let (_, u) = civichub_identity::http::signed_in(id, cookie.as_deref(), return_to).await?;
    Ok(u.name.unwrap_or(u.username))
}

async fn search_page(query: PageQuery, raw: String, cookie: Option<String>, kb: Arc<KnowledgeBase>, id: Arc<Identity>) -> Response {
    let return_to = if raw.is_empty() { "/kb".to_owned() } else { format!("/kb?{raw}") };
    let user = match signed_in(&id, cookie, &return_to).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let q = query.q.clone().unwrap_or_default().trim().to_owned();
    let category = query.category.as_deref().filter(|s| !s.is_empty());
    let department = query.department.as_deref().filter(|s| !s.is_empty());
    let page = query.page.unwrap_or(1).max(1);
    let mut view = SearchPage {
        user: &user,
        q: &q,
        category,
        department,
        error: None,
        results: None,
        category_links: Vec::new(),
        department_links: Vec::new(),
        clear_href: href(&q, None, None, None),
        prev_href: None,
        next_href: None,
        entry_query: serde_urlencoded::to_string([("q", q.as_str())]).unwrap_or_default(),
    };
    if q.chars().count() > crate::MAX_QUERY_CHARS {
        view.error = Some(format!("搜索词过长（最多 {} 字），请精简后再搜。", crate::MAX_QUERY_CHARS));
    } else if !q.is_empty() {
        let request = SearchRequest {
            q: q.clone(),
            category: category.map(str::to_owned),
            department: department.map(str::to_owned),
            page,
            size: PAGE_SIZE,
        };
        match crate::blocking(|| kb.index.search(&request, Visibility::Internal, civichub_store::now())) {
            Ok(results) => {
                let mut cats: Vec<(String, u64)> = results.facets.category.iter().map(|(k, v)| (k.clone(), *v)).collect();
                cats.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                view.category_links = cats.into_iter().map(|(c, n)| { let h = href(&q, Some(&c), department, None); (c, n, h) }).collect();
                let mut deps: Vec<(String, u64)> = results.facets.department.iter().map(|(k, v)| (k.clone(), *v)).collect();
                deps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                view.department_links = deps.into_iter().map(|(d, n)| { let h = href(&q, category, Some(&d), None); (d, n, h) }).collect();
                if page > 1 {
                    view.prev_href = Some(href(&q, category, department, Some(page - 1)));
                }
                if page * PAGE_SIZE < results.total && (page + 1) * PAGE_SIZE <= crate::MAX_RESULT_WINDOW {
                    view.next_href = Some(href(&q, category, department, Some(page + 1)));
                }
                view.results = Some(results);
            }
            Err(e) => view.error = Some(e.to_string()),
        }
    }
    render(&view)
}

async fn entry_page(entry_id: String, query: EntryQuery, cookie: Option<String>, kb: Arc<KnowledgeBase>, id: Arc<Identity>) -> Response {
    let back = href(query.q.as_deref().unwrap_or_default().trim(), None, None, None);
    let user = match signed_in(&id, cookie, &format!("/kb/entries/{entry_id}")).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    match kb.entries.get(&entry_id).await {
        Ok(Some(entry)) => render(&EntryPage {
            user: &user,
            internal: entry.audience == Audience::Internal,
            published: entry.status == Status::Published,
            status: match entry.status {
                Status::Draft => "草稿",
                Status::Published => "已发布",
                Status::Expired => "已失效",
            },
            paragraphs: entry.body.lines().filter(|l| !l.trim().is_empty()).collect(),
            updated: format_date(entry.updated_at),
            from: entry.effective_from.map(format_date),
            until: entry.effective_until.map(format_date),
            entry: &entry,
            back,
        }),
        Ok(None) => civichub_identity::http::render(
            StatusCode::NOT_FOUND,
            &civichub_identity::http::MessagePage { title: "没有这条知识", message: "这条知识不存在或已删除。", is_error: true, link: Some(("/kb", "返回知识库检索")) },
        ),
        Err(e) => {
            tracing::error!("reading entry: {e}");
            html(StatusCode::INTERNAL_SERVER_ERROR, "服务器内部错误".into())
        }
    }
}

/// `GET /kb`, `GET /kb/entries/{id}`, `GET /kb/widget.js`, `GET /kb/assets/kb.css`.
pub fn routes(kb: Arc<KnowledgeBase>, id: Arc<Identity>) -> warp::filters::BoxedFilter<(Response,)> {
    let state = warp::any().map(move || (kb.clone(), id.clone()));
    let cookie = warp::cookie::optional::<String>(civichub_identity::SESSION_COOKIE);
    let search = warp::path!("kb")
        .and(warp::get())
        .and(warp::query::<PageQuery>().or(warp::any().map(PageQuery::default)).unify())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(cookie)
        .and(state.clone())
        .then(|q, raw, cookie, (kb, id)| search_page(q, raw, cookie, kb, id));
    let entry = warp::path!("kb" / "entries" / String)
        .and(warp::get())
        .and(warp::query::<EntryQuery>().or(warp::any().map(EntryQuery::default)).unify())
        .and(cookie)
        .and(state)
        .then(|entry_id, query, cookie, (kb, id)| entry_page(entry_id, query, cookie, kb, id));
    let asset = |path: &'static str, body: &'static str, content_type: &'static str| {
        warp::path("kb").and(warp::path("assets").or(warp::any()).unify()).and(warp::path(path)).and(warp::path::end()).and(warp::get()).map(move || {
            let r = warp::reply::with_header(body, "content-type", content_type);
            warp::reply::with_header(r, "cache-control", "public, max-age=300").into_response()
        })
    };
    search
        .or(entry)
        .unify()
        .or(asset("widget.js", WIDGET_JS, "text/javascript; charset=utf-8"))
        .unify()
        .or(asset("kb.css", KB_CSS, "text/css; charset=utf-8"))
        .unify()
        .boxed()
}
