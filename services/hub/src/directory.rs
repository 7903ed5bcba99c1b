//! The directory from DingTalk: `civichub directory sync dingtalk` (the
//! whole organisation) and `POST /api/integrations/dingtalk/events` (its
//! encrypted event callbacks, one change at a time).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use civichub_identity::{Directory, OrgDepartment, OrgPerson, OrgSnapshot};
use civichub_store::Db;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum DirectoryCommand {
    /// Bring the directory in line with an outside source: create, update and
    /// disable users, add, move and remove departments.
    Sync {
        /// The source: dingtalk.
        #[arg(value_parser = ["dingtalk"])]
        source: String,
        /// Print the changes only.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The directory source these members and departments are linked under.
const SOURCE: &str = "dingtalk";

/// DingTalk's errcodes worth asking again after a pause: busy, rate limited.
const TRANSIENT: &[&str] = &["-1", "90002", "90018", "88", "http_429", "http_500", "http_502", "http_503"];
/// Attempts per call before the sync gives up.
const ATTEMPTS: u32 = 4;

/// `call` again after 0.5, 1 and 2 s when DingTalk is busy or rate-limits.
async fn with_retry<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = civichub_dingtalk::Result<T>>,
{
    let mut pause = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match call().await {
            Ok(v) => return Ok(v),
            Err(civichub_dingtalk::Error::Api { code, message, .. }) if TRANSIENT.contains(&code.as_str()) && attempt < ATTEMPTS => {
                eprintln!("{what}: DingTalk busy ({code} {message}); again in {} ms", pause.as_millis());
            }
            Err(civichub_dingtalk::Error::Transport(e)) if attempt < ATTEMPTS => {
                eprintln!("{what}: {e}; again in {} ms", pause.as_millis());
            }
            Err(e) => return Err(e).with_context(|| what.to_owned()),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    bail!("{what}: gave up after {ATTEMPTS} attempts")
}

/// A DingTalk member as the directory takes them (the root department is the organisation, not a department).
fn person(u: &civichub_dingtalk::User) -> OrgPerson {
    OrgPerson {
        external_id: u.userid.clone(),
        name: u.name.clone(),
        mobile: u.mobile.clone(),
        email: u.email.clone(),
        title: u.title.clone(),
        employee_no: u.job_number.clone(),
        departments: u.dept_id_list.iter().filter(|d| **d != civichub_dingtalk::ROOT_DEPT_ID).map(i64::to_string).collect(),
        alias: Some(u.unionid.clone()).filter(|a| !a.is_empty()),
    }
}

/// A DingTalk department as the directory takes it (top-level ones have no parent).
fn department(d: &civichub_dingtalk::Department) -> OrgDepartment {
    let root = civichub_dingtalk::ROOT_DEPT_ID;
    OrgDepartment { id: d.dept_id.to_string(), name: d.name.clone(), parent: (d.parent_id != root && d.parent_id != 0).then(|| d.parent_id.to_string()) }
}

/// Everything DingTalk's organisation holds, read in full, or an error: a
/// page that cannot be read leaves no snapshot, so nobody is disabled for it.
async fn dingtalk_snapshot(client: &civichub_dingtalk::DingTalk) -> Result<OrgSnapshot> {
    let departments = with_retry("listing departments", || client.walk_departments()).await?;
    let root = civichub_dingtalk::ROOT_DEPT_ID;
    let bar = indicatif::ProgressBar::new(departments.len() as u64 + 1);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} 个部门 {elapsed}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut people: BTreeMap<String, OrgPerson> = BTreeMap::new();
    for dept in std::iter::once(root).chain(departments.iter().map(|d| d.dept_id)) {
        let members = with_retry(&format!("listing the members of department {dept}"), || client.all_users(dept)).await?;
        for u in members {
            people.entry(u.userid.clone()).or_insert_with(|| person(&u));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(OrgSnapshot {
        departments: departments.iter().map(department).collect(),
        people: people.into_values().collect(),
    })
}

pub async fn run(config: &Config, cmd: DirectoryCommand) -> Result<()> {
    match cmd {
        DirectoryCommand::Sync { source: _, dry_run } => {
            let Some(client) = crate::channels::dingtalk(&config.messaging)? else {
                bail!("directory sync dingtalk needs the DingTalk app: --dingtalk-app-key, --dingtalk-app-secret, --dingtalk-agent-id");
            };
            let snapshot = dingtalk_snapshot(&client).await?;
            let db = Db::connect(&config.database).await?;
            let directory = Directory::new(db);
            let changes = if dry_run { directory.plan(SOURCE, &snapshot).await? } else { directory.apply(SOURCE, &snapshot).await? };
            for c in &changes {
                println!("{c}");
            }
            let count = |f: fn(&civichub_identity::DirectoryChange) -> bool| changes.iter().filter(|c| f(c)).count();
            use civichub_identity::DirectoryChange as C;
            println!(
                "{}{} departments, {} people read; departments +{} ~{} -{}; users +{} ~{} disabled {} enabled {}",
                if dry_run { "dry run, nothing written: " } else { "" },
                snapshot.departments.len(),
                snapshot.people.len(),
                count(|c| matches!(c, C::DepartmentAdded { .. })),
                count(|c| matches!(c, C::DepartmentChanged { .. })),
                count(|c| matches!(c, C::DepartmentRemoved { .. })),
                count(|c| matches!(c, C::UserAdded { .. })),
                count(|c| matches!(c, C::UserChanged { .. })),
                count(|c| matches!(c, C::UserDisabled { .. })),
                count(|c| matches!(c, C::UserEnabled { .. })),
            );
            Ok(())
        }
    }
}

/// What the event callback needs.
#[derive(Clone)]
struct Events {
    crypto: std::sync::Arc<civichub_dingtalk::CallbackCrypto>,
    client: civichub_dingtalk::DingTalk,
    directory: Directory,
}

/// DingTalk's callback body.
#[derive(serde::Deserialize)]
struct Encrypted {
    encrypt: String,
}

/// `POST /api/integrations/dingtalk/events`, when the callback is configured.
pub fn event_routes(config: &Config, db: Db) -> Result<Option<warp::filters::BoxedFilter<(warp::reply::Response,)>>> {
    use warp::Filter;
    let m = &config.messaging;
    let (Some(token), Some(aes_key)) = (&m.dingtalk_callback_token, &m.dingtalk_callback_aes_key) else { return Ok(None) };
    let Some(client) = crate::channels::dingtalk(m)? else {
        bail!("the DingTalk event callback needs the DingTalk app: --dingtalk-app-key, --dingtalk-app-secret, --dingtalk-agent-id");
    };
    let owner = m.dingtalk_app_key.clone().unwrap_or_default();
    let crypto = civichub_dingtalk::CallbackCrypto::new(token.expose(), aes_key.expose(), owner).context("--dingtalk-callback-aes-key")?;
    let events = Events { crypto: std::sync::Arc::new(crypto), client, directory: Directory::new(db) };
    let route = warp::path!("api" / "integrations" / "dingtalk" / "events")
        .and(warp::post())
        .and(warp::query::<std::collections::HashMap<String, String>>())
        .and(civichub_identity::limited_body(64 * 1024))
        .and(warp::any().map(move || events.clone()))
        .then(|q: std::collections::HashMap<String, String>, body: warp::hyper::body::Bytes, events: Events| async move { receive(&events, &q, &body).await })
        .boxed();
    Ok(Some(route))
}

fn answer(status: warp::http::StatusCode, error: &str, message: &str) -> warp::reply::Response {
    civichub_identity::http::json(status, &serde_json::json!({ "error": error, "message": message }))
}

/// Checks, decrypts and applies one callback; answers DingTalk's encrypted
/// `success`, or an error so that DingTalk sends it again.
async fn receive(events: &Events, q: &std::collections::HashMap<String, String>, body: &[u8]) -> warp::reply::Response {
    use warp::http::StatusCode;
    let param = |name: &str| q.get(name).map(String::as_str).unwrap_or_default();
    let signature = q.get("msg_signature").or_else(|| q.get("signature")).map(String::as_str).unwrap_or_default();
    let Ok(Encrypted { encrypt }) = serde_json::from_slice::<Encrypted>(body) else {
        return answer(StatusCode::BAD_REQUEST, "invalid_request", "the body must be {\"encrypt\": \"…\"}");
    };
    // DingTalk's documentation names it `timeStamp`; older callbacks send `timestamp`.
    let timestamp = q.get("timeStamp").or_else(|| q.get("timestamp")).map(String::as_str).unwrap_or_default();
    let plain = match events.crypto.decrypt_event(signature, timestamp, param("nonce"), &encrypt) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("a DingTalk callback failed its check: {e}");
            return answer(StatusCode::FORBIDDEN, "invalid_signature", "the signature or the encryption does not check");
        }
    };
    let event = match civichub_dingtalk::CallbackEvent::parse(&plain) {
        Ok(e) => e,
        Err(e) => return answer(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()),
    };
    if !event.is_check_url()
        && let Err(e) = apply(events, &event).await
    {
        tracing::warn!("DingTalk event {}: {e:#}", event.event_type);
        return answer(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the event could not be applied now; send it again");
    }
    match events.crypto.success_reply() {
        Ok(reply) => civichub_identity::http::json(StatusCode::OK, &reply),
        Err(e) => civichub_identity::http::server_error_json(e),
    }
}

/// Applies a directory event: the members and departments it names, read
/// from DingTalk as they are now.
async fn apply(events: &Events, event: &civichub_dingtalk::CallbackEvent) -> Result<()> {
    let (client, directory) = (&events.client, &events.directory);
    match event.event_type.as_str() {
        "user_add_org" | "user_modify_org" | "user_active_org" => {
            let known: std::collections::HashSet<String> = directory.departments(SOURCE).await?.into_iter().map(|d| d.id).collect();
            for userid in &event.user_ids {
                let user = client.get_user(userid).await.with_context(|| format!("reading member {userid}"))?;
                for dept in user.dept_id_list.iter().filter(|d| **d != civichub_dingtalk::ROOT_DEPT_ID && !known.contains(&d.to_string())) {
                    let d = client.get_department(*dept).await.with_context(|| format!("reading department {dept}"))?;
                    directory.upsert_department(SOURCE, &department(&d)).await?;
                }
                let change = directory.upsert_person(SOURCE, &person(&user)).await?;
                tracing::info!("DingTalk {}: {change}", event.event_type);
            }
        }
        "user_leave_org" => {
            for userid in &event.user_ids {
                // Only someone DingTalk no longer knows leaves: an old event sent
                // again (a retry or a replay) must not disable a member who is back.
                match client.get_user(userid).await {
                    Err(e) if e.api_code() == Some(civichub_dingtalk::UNKNOWN_USER) => {
                        if let Some(change) = directory.leave(SOURCE, userid).await? {
                            tracing::info!("DingTalk user_leave_org: {change}");
                        }
                    }
                    Err(e) => return Err(e).with_context(|| format!("reading member {userid}")),
                    Ok(_) => tracing::info!("DingTalk user_leave_org for {userid} ignored: still a member"),
                }
            }
        }
        "org_dept_create" | "org_dept_modify" => {
            for dept in &event.dept_ids {
                let d = client.get_department(*dept).await.with_context(|| format!("reading department {dept}"))?;
                directory.upsert_department(SOURCE, &department(&d)).await?;
            }
        }
        "org_dept_remove" => {
            for dept in &event.dept_ids {
                directory.remove_department(SOURCE, &dept.to_string()).await?;
            }
        }
        other => tracing::debug!("DingTalk event {other} ignored"),
    }
    Ok(())
}
