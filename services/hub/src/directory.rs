//! `civichub directory sync dingtalk`: the department tree and its members
//! from DingTalk into the hub's directory.

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
            people.entry(u.userid.clone()).or_insert_with(|| OrgPerson {
                external_id: u.userid.clone(),
                name: u.name.clone(),
                mobile: u.mobile.clone(),
                email: u.email.clone(),
                title: u.title.clone(),
                employee_no: u.job_number.clone(),
                departments: u.dept_id_list.iter().filter(|d| **d != root).map(i64::to_string).collect(),
            });
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(OrgSnapshot {
        departments: departments
            .into_iter()
            .map(|d| OrgDepartment { id: d.dept_id.to_string(), name: d.name, parent: (d.parent_id != root && d.parent_id != 0).then(|| d.parent_id.to_string()) })
            .collect(),
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
            let changes = if dry_run { directory.plan("dingtalk", &snapshot).await? } else { directory.apply("dingtalk", &snapshot).await? };
            for c in &changes {
                println!("{c}");
            }
            let count = |f: fn(&civichub_identity::DirectoryChange) -> bool| changes.iter().filter(|c| f(c)).count();
            use civichub_identity::DirectoryChange as C;
            println!(
                "{}{} departments, {} people read; departments +{} ~{} -{}; users +{} ~{} disabled {}",
                if dry_run { "dry run, nothing written: " } else { "" },
                snapshot.departments.len(),
                snapshot.people.len(),
                count(|c| matches!(c, C::DepartmentAdded { .. })),
                count(|c| matches!(c, C::DepartmentChanged { .. })),
                count(|c| matches!(c, C::DepartmentRemoved { .. })),
                count(|c| matches!(c, C::UserAdded { .. })),
                count(|c| matches!(c, C::UserChanged { .. })),
                count(|c| matches!(c, C::UserDisabled { .. })),
            );
            Ok(())
        }
    }
}
