//! `civichub serve`: open the store, compose every service's routes, serve.

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::{Context, Result};
use civichub_identity::{Identity, Settings, Users};
use civichub_kb::KnowledgeBase;
use civichub_messaging::Bus;
use civichub_store::Db;
use tracing_subscriber::EnvFilter;
use url::Url;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::config::Config;

pub async fn run(config: Config) -> Result<()> {
    let filter = EnvFilter::try_new(&config.log)
        .with_context(|| format!("--log {:?} is not a log filter (e.g. info, or warn,civichub=debug)", config.log))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let db = Db::connect(&config.database).await.with_context(|| format!("cannot open database {}", config.database))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let issuer = match &config.issuer {
        Some(url) => url.clone(),
        None => Url::parse(&format!("http://{addr}"))?,
    };
    let identity = Identity::open(db.clone(), Settings::new(issuer)).await?;
    crate::federation::register(&config, &identity)?;
    identity.spawn_workers();
    // What the home page offers someone signed in, by their roles.
    for (label, href, roles) in [
        ("工单工作台（话务员）", "/hotline", &["agent"][..]),
        ("部门办理", "/hotline/department", &["handler"][..]),
        ("督办", "/hotline/supervise", &["supervisor"][..]),
        ("领导驾驶舱", "/hotline/dashboard", &["leader", "supervisor"][..]),
        ("12345 知识库", "/kb", &[][..]),
    ] {
        identity.add_home_link(civichub_identity::HomeLink { label: label.into(), href: href.into(), roles: roles.iter().map(|r| (*r).to_owned()).collect() });
    }
    let kb = KnowledgeBase::open(db.clone(), Some(&config.data_dir.join("kb-index")))
        .await
        .context("cannot open the knowledge base index")?;
    let mut background = vec![kb.spawn_follower()];
    let bus = match &config.messaging.nats_url {
        Some(url) => Bus::nats(db.clone(), url).await.with_context(|| format!("cannot use NATS at {url}"))?,
        None => Bus::local(db.clone()),
    };
    let router = Arc::new(crate::channels::router(&config, bus.clone()).await?);
    background.push(router.start());
    let data_key = match &config.hotline_data_key {
        Some(k) => civichub_hotline::DataKey::parse(k.expose())?,
        None => civichub_hotline::DataKey::load_or_create(&config.data_dir.join("hotline-data.key"))?,
    };
    let tickets = Arc::new(civichub_hotline::Tickets::new(bus.clone(), data_key, config.hotline_calendar.clone(), config.hotline_time_limits.clone()).with_catalogue(kb.clone()));
    civichub_hotline::Notices::register(router.clone(), tickets.clone());
    civichub_messaging::AccountNotices::register(router.clone());
    civichub_hotline::SmsIntake::register(&bus, tickets.clone());
    civichub_hotline::Calls::register(&bus, tickets.clone());
    background.push(tickets.spawn_deadline_watch(config.hotline_deadline_sweep));
    let bus_tasks = bus.start();
    // After every consumer is registered: on the embedded bus it forwards only what they take.
    background.push(civichub_messaging::spawn_audit_forwarder(bus.clone()));

    println!("civichub listening on http://{addr}");
    println!("issuer: {}", identity.settings.issuer_str());
    println!("database: {}", config.database);
    println!("bus: {}", if bus.is_nats() { "NATS JetStream" } else { "embedded (in the database)" });
    if Users::new(db.clone()).list().await?.is_empty() {
        let flags = global_flags(&config);
        println!("no users yet; add the first one and a client:");
        println!("  echo 'PASSWORD' | civichub user add admin --password-stdin --role admin{flags}");
        println!("  civichub client add my-app --redirect-uri https://my-app.example/callback{flags}");
    }

    let kb_api = civichub_kb::api::routes(
        kb.clone(),
        identity.clone(),
        civichub_kb::api::ApiSettings {
            cors_origins: config.kb_cors_origins.clone(),
            public_requests_per_minute: config.kb_rate_limit,
        },
    );
    // DingTalk's directory events, when the callback is configured (else a route that never matches).
    let dingtalk_events = crate::directory::event_routes(&config, db.clone())?
        .unwrap_or_else(|| warp::any().and_then(|| async { Err::<warp::reply::Response, _>(warp::reject::not_found()) }).boxed());
    let routes = civichub_identity::no_nul_in_query()
        .and(civichub_identity::routes(identity.clone())
        .or(kb_api)
        .or(civichub_kb::pages::routes(kb.clone(), identity.clone()))
        .or(civichub_messaging::api::routes(router.clone(), identity.clone()))
        .or(civichub_hotline::api::routes(tickets.clone(), identity.clone(), config.hotline_rate_limit))
        .or(civichub_hotline::pages::routes(tickets.clone(), identity.clone()))
        .or(dingtalk_events))
        .recover(handle_rejection)
        .with(warp::log("civichub::http"));
    warp::serve(routes).incoming(listener).graceful(shutdown_signal()).run().await;
    tracing::info!("stopping");
    // The bus first, cooperatively: its consumers finish the deliveries in
    // hand (a send half done would be sent again after the restart) and take
    // no new one; a handler stuck past the grace period is cut off.
    bus.stop();
    let bus_aborts: Vec<_> = bus_tasks.iter().map(|t| t.abort_handle()).collect();
    if tokio::time::timeout(SHUTDOWN_GRACE, futures_util::future::join_all(bus_tasks)).await.is_err() {
        tracing::warn!("the bus did not finish within {SHUTDOWN_GRACE:?}; what it held is delivered again after the restart");
        bus_aborts.iter().for_each(|t| t.abort());
    }
    // Then the other workers, before the pool closes under them (anything they
    // had not finished stays in the outbox or on the bus for the next start).
    for task in background {
        task.abort();
    }
    tracing::info!("stopped");
    db.close().await;
    Ok(())
}

/// How long a shutdown waits for the bus's consumers to finish what they hold.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

fn global_flags(config: &Config) -> String {
    let mut flags = String::new();
    if config.data_dir.as_os_str() != "data" {
        flags.push_str(&format!(" --data-dir {}", config.data_dir.display()));
    }
    if config.database.backend() == civichub_store::Backend::Postgres {
        flags.push_str(" --database-url …");
    }
    flags
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The one place rejections become replies: JSON `{"error", "error_description"}`.
async fn handle_rejection(err: Rejection) -> Result<warp::reply::Response, Infallible> {
    let (status, error, description) = if err.is_not_found() {
        (StatusCode::NOT_FOUND, "not_found", "no such endpoint".to_owned())
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() || err.find::<civichub_identity::BodyTooLarge>().is_some() {
        (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "request body too large".to_owned())
    } else if err.find::<civichub_identity::BodyUnreadable>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid_request", "the request body could not be read".to_owned())
    } else if err.find::<civichub_identity::NulInInput>().is_some() {
        (StatusCode::BAD_REQUEST, "invalid_request", "the request holds a NUL character (%00 or \\u0000), which no field accepts".to_owned())
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        (StatusCode::LENGTH_REQUIRED, "invalid_request", "Content-Length is required".to_owned())
    } else if err.find::<warp::filters::cors::CorsForbidden>().is_some() {
        (StatusCode::FORBIDDEN, "cors_forbidden", "this origin may not call the API from a browser".to_owned())
    } else if let Some(e) = err.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
    } else if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
    } else if let Some(e) = err.find::<warp::reject::UnsupportedMediaType>() {
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request", e.to_string())
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        // Last: a route with the right method that refused the request says more
        // than another route on the same path with a different method.
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed for this endpoint".to_owned())
    } else {
        tracing::error!("unhandled rejection: {err:?}");
        (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal server error".to_owned())
    };
    let body = warp::reply::json(&serde_json::json!({ "error": error, "error_description": description }));
    Ok(warp::reply::with_status(body, status).into_response())
}
