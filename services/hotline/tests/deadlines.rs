//! Deadline alerts on the embedded store: raised once per deadline, with
//! an audit record and an event in the outbox, and raised again when the
//! deadline moves.
// A panic is how a test fails: unwrapping is the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use civichub_hotline::{Action, Actor, Calendar, DataKey, NewTicket, Role, Tickets};
use civichub_messaging::Bus;
use civichub_store::{Db, DbUrl, Row};

const DAY: i64 = 86_400_000;

async fn outbox_subjects(db: &Db) -> Vec<String> {
    sqlx::query("SELECT subject FROM bus_outbox ORDER BY id")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get("subject").unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_tickets_raise_each_alert_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.unwrap();
    // The relay is not started: the outbox keeps what the tickets announce.
    let tickets = Tickets::new(Bus::local(db.clone()), DataKey::from_secret(&[1; 32]), Calendar::default(), Default::default());
    let agent = Actor { name: "agent".into(), roles: vec![Role::Agent, Role::Supervisor], department: None };
    let handler = Actor { name: "zhang".into(), roles: vec![Role::Handler], department: Some("城管局".into()) };
    let now = civichub_messaging::now_ms();
    let new = || NewTicket::parse("{\"channel\":\"phone\",\"content\":\"路灯不亮\",\"caller_phone\":\"13912345678\"}".as_bytes()).unwrap();

    // Dispatched ten days ago and never signed: both the sign and the reply deadline passed.
    let late = tickets.register(new(), "agent", now - 10 * DAY).await.unwrap();
    let dispatch = Action::parse("dispatch", "{\"department\":\"城管局\"}".as_bytes()).unwrap();
    tickets.act(&late.number, &dispatch, &agent, now - 10 * DAY).await.unwrap();
    // Dispatched just now: nothing is due.
    let fresh = tickets.register(new(), "agent", now).await.unwrap();
    tickets.act(&fresh.number, &dispatch, &agent, now).await.unwrap();

    assert_eq!(tickets.sweep_deadlines(now).await.unwrap(), 2, "sign_overdue and overdue for the late ticket");
    assert_eq!(tickets.sweep_deadlines(now).await.unwrap(), 0, "each alert once");
    // Nothing raised is read again: however many tickets are late, a sweep reads only those with news.
    let pending: i64 = sqlx::query("SELECT COUNT(*) AS n FROM hotline_tickets WHERE next_alert_ms <= $1")
        .bind(now)
        .fetch_one(db.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(pending, 0);
    let subjects = outbox_subjects(&db).await;
    assert!(subjects.contains(&"civichub.hotline.ticket.sign_overdue".to_owned()), "{subjects:?}");
    assert!(subjects.contains(&"civichub.hotline.ticket.overdue".to_owned()), "{subjects:?}");
    let trail = tickets.events(&late.number).await.unwrap();
    assert!(trail.iter().any(|e| e.event == "overdue" && e.actor == "system" && e.action == "deadline"), "{trail:?}");
    assert!(tickets.events(&fresh.number).await.unwrap().iter().all(|e| e.action != "deadline"));

    // Signed late; more time can no longer be asked for, the deadline having passed.
    tickets.act(&late.number, &Action::parse("accept", b"").unwrap(), &handler, now).await.unwrap();
    let extend = Action::parse("extend", "{\"working_days\":1,\"reason\":\"协调中\"}".as_bytes());
    // Too late to ask: the deadline has passed.
    assert!(tickets.act(&late.number, &extend.unwrap(), &handler, now).await.is_err());
    let t = tickets.get(&late.number).await.unwrap();
    let due = t.due_ms.unwrap();
    assert!(due < now);

    // The fresh ticket comes due: four hours before, then after.
    let fresh_due = tickets.get(&fresh.number).await.unwrap().due_ms.unwrap();
    assert_eq!(tickets.sweep_deadlines(fresh_due - 3_600_000).await.unwrap(), 2, "sign_overdue and due_soon");
    assert_eq!(tickets.sweep_deadlines(fresh_due + 1).await.unwrap(), 1, "overdue");
    assert_eq!(tickets.sweep_deadlines(fresh_due + 2).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_showing_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.unwrap();
    let tickets = Tickets::new(Bus::local(db.clone()), DataKey::from_secret(&[1; 32]), Calendar::default(), Default::default());
    tickets.record_call("call-1", "agent", "13912345678", "answered").await.unwrap();
    let now = civichub_messaging::now_ms();
    assert_eq!(tickets.forget_calls(now).await.unwrap(), 0, "a call in progress stays");
    assert_eq!(tickets.current_call("agent").await.unwrap().map(|c| c.caller), Some("13912345678".to_owned()));
    assert_eq!(tickets.forget_calls(now + 2 * 3_600_000).await.unwrap(), 1, "two hours on, it goes with its caller's number");
    let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM hotline_calls").fetch_one(db.pool()).await.unwrap().try_get("n").unwrap();
    assert_eq!(left, 0);
}
