//! The follower keeps a node's index current from `kb_changes`, and a
//! restarted node resumes where it stopped: it neither loses a change nor
//! rebuilds again for a rebuild request its index already reflects.
// A panic is how a test fails: unwrapping is the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use civichub_kb::{EntryInput, KnowledgeBase, Status};
use civichub_store::{Db, DbUrl};

fn entry(id: &str, title: &str) -> civichub_kb::ValidEntry {
    let input: EntryInput = serde_json::from_value(serde_json::json!({"id": id, "title": title, "body": format!("{title}的办理方法。")})).unwrap();
    input.validate(Status::Published).unwrap()
}

fn opstamp(dir: &std::path::Path) -> u64 {
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    meta["opstamp"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resumes_without_rebuilding_again() {
    let data = tempfile::tempdir().unwrap();
    let index_dir = data.path().join("kb-index");
    let db = Db::connect(&DbUrl::sqlite_in(data.path())).await.unwrap();
    let kb = KnowledgeBase::open(db.clone(), Some(&index_dir)).await.unwrap();
    for i in 0..200 {
        kb.create(entry(&format!("e{i}"), &format!("第{i}条居住证问题")), None).await.unwrap();
    }
    kb.catch_up().await.unwrap();
    assert_eq!(kb.index.len(), 200);
    kb.entries.request_rebuild().await.unwrap();
    assert!(kb.catch_up().await.unwrap() >= 1, "the rebuild request is applied");
    assert_eq!(kb.catch_up().await.unwrap(), 0, "and only once");
    drop(kb);
    let before = opstamp(&index_dir);

    // The same node starts again. It re-applies the last few changes (a
    // change can commit after a higher-numbered one on PostgreSQL), but does
    // not rebuild: a rebuild re-adds all 200 entries.
    let kb = KnowledgeBase::open(db.clone(), Some(&index_dir)).await.unwrap();
    kb.catch_up().await.unwrap();
    let operations = opstamp(&index_dir) - before;
    assert!(operations < 200, "{operations} index operations at start: a rebuild");
    assert_eq!(kb.index.len(), 200);

    // A change made while it was down is picked up.
    kb.create(entry("late", "后来添加的条目"), None).await.unwrap();
    kb.catch_up().await.unwrap();
    assert_eq!(kb.index.len(), 201);
}

/// A knowledge base of 101 entries (e0 … e100, one change each) whose
/// first change is held back, as a transaction that took its number first
/// and has not committed would hold it; returns the change number held back.
async fn with_first_change_held_back(db: &Db) -> (Arc<KnowledgeBase>, i64) {
    use sqlx::Row;
    let kb = KnowledgeBase::open(db.clone(), None).await.unwrap();
    for i in 0..101 {
        kb.create(entry(&format!("e{i}"), &format!("第{i}条公积金提取问题")), None).await.unwrap();
    }
    let seq: i64 = sqlx::query("SELECT seq FROM kb_changes WHERE entry_id = 'e0'").fetch_one(db.pool()).await.unwrap().get("seq");
    sqlx::query("DELETE FROM kb_changes WHERE seq = $1").bind(seq).execute(db.pool()).await.unwrap();
    (kb, seq)
}

/// The held-back change commits.
async fn commit_held_back(db: &Db, seq: i64) {
    sqlx::query("INSERT INTO kb_changes (seq, entry_id, at) VALUES ($1, 'e0', 0)").bind(seq).execute(db.pool()).await.unwrap();
}

/// On PostgreSQL a change can become visible after many higher-numbered
/// ones have been applied (its transaction took its number first and
/// committed last): the follower applies the 100 after it, then the late
/// one when it shows up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_commits_after_many_higher_ones_is_applied() {
    let data = tempfile::tempdir().unwrap();
    let db = Db::connect(&DbUrl::sqlite_in(data.path())).await.unwrap();
    let (kb, seq) = with_first_change_held_back(&db).await;
    kb.catch_up().await.unwrap();
    assert_eq!(kb.index.len(), 100, "the 100 changes after the held-back one");

    commit_held_back(&db, seq).await;
    assert_eq!(kb.catch_up().await.unwrap(), 1, "the late change, once");
    assert_eq!(kb.index.len(), 101);
    assert_eq!(kb.catch_up().await.unwrap(), 0);
}

/// A rebuild reads every entry committed; a change whose transaction is
/// still open then (its entry not yet published either) is applied when it
/// commits, however many changes came after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_still_open_during_a_rebuild_is_applied_after() {
    let data = tempfile::tempdir().unwrap();
    let db = Db::connect(&DbUrl::sqlite_in(data.path())).await.unwrap();
    let (kb, seq) = with_first_change_held_back(&db).await;
    sqlx::query("UPDATE kb_entries SET status = 'draft' WHERE id = 'e0'").execute(db.pool()).await.unwrap();
    kb.reindex().await.unwrap();
    assert_eq!(kb.index.len(), 100);

    sqlx::query("UPDATE kb_entries SET status = 'published' WHERE id = 'e0'").execute(db.pool()).await.unwrap();
    commit_held_back(&db, seq).await;
    assert_eq!(kb.catch_up().await.unwrap(), 1);
    assert_eq!(kb.index.len(), 101, "the change committed after the rebuild is applied");
}
