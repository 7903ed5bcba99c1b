//! The department tree and its members as an outside directory (DingTalk's
//! organisation) holds them: a sync compares a full snapshot with what the
//! hub holds, says what would change, and applies it.
//!
//! **Invariant:** a sync only starts from a complete snapshot; a source that
//! failed to list a page gives no snapshot, so nobody is disabled because a
//! page was missing.

use std::collections::{BTreeMap, HashMap, HashSet};

use civichub_store::{Db, Row, now, random_token};
use serde::Serialize;

use crate::values::Username;
use crate::{Result, Users};

/// A department of the source, its ids the source's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgDepartment {
    /// The source's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its parent's id (none at the top).
    pub parent: Option<String>,
}

/// A member of the source's organisation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OrgPerson {
    /// The source's id (DingTalk userid), the link key.
    pub external_id: String,
    /// Name.
    pub name: String,
    /// Mobile number.
    pub mobile: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Job title.
    pub title: Option<String>,
    /// Staff number.
    pub employee_no: Option<String>,
    /// The departments (source ids) the person belongs to, the main one first.
    pub departments: Vec<String>,
    /// The id the source gives the person across its apps (DingTalk's
    /// unionid), kept as the link `{source}-union`.
    pub alias: Option<String>,
}

/// Everything the source holds, read in full.
#[derive(Clone, Debug, Default)]
pub struct OrgSnapshot {
    /// Departments.
    pub departments: Vec<OrgDepartment>,
    /// Members (each once).
    pub people: Vec<OrgPerson>,
}

/// One change a sync makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum DirectoryChange {
    /// A new department.
    DepartmentAdded { id: String, name: String, parent: Option<String> },
    /// A department renamed or moved.
    DepartmentChanged { id: String, name: String, parent: Option<String>, was_name: String, was_parent: Option<String> },
    /// A department the source no longer has.
    DepartmentRemoved { id: String, name: String },
    /// A new member: a new user, linked.
    UserAdded { username: String, external_id: String, name: String },
    /// A member's profile or departments changed.
    UserChanged { username: String, fields: Vec<String> },
    /// A member who left: disabled (sessions ended, tokens revoked).
    UserDisabled { username: String },
    /// A member who left and is back: enabled again (only if this source had disabled them).
    UserEnabled { username: String },
}

impl std::fmt::Display for DirectoryChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectoryChange::DepartmentAdded { id, name, .. } => write!(f, "+ 部门 {name} ({id})"),
            DirectoryChange::DepartmentChanged { id, name, was_name, parent, was_parent } => {
                write!(f, "~ 部门 {was_name} → {name} ({id})")?;
                if parent != was_parent {
                    write!(f, "，上级 {} → {}", was_parent.as_deref().unwrap_or("-"), parent.as_deref().unwrap_or("-"))?;
                }
                Ok(())
            }
            DirectoryChange::DepartmentRemoved { id, name } => write!(f, "- 部门 {name} ({id})"),
            DirectoryChange::UserAdded { username, external_id, name } => write!(f, "+ 用户 {username} {name} ({external_id})"),
            DirectoryChange::UserChanged { username, fields } => write!(f, "~ 用户 {username}: {}", fields.join(", ")),
            DirectoryChange::UserDisabled { username } => write!(f, "- 用户 {username}（已离职，停用）"),
            DirectoryChange::UserEnabled { username } => write!(f, "+ 用户 {username}（重新入职，启用）"),
        }
    }
}

/// A member as the hub holds them.
#[derive(Clone, Debug)]
struct Held {
    user_id: String,
    username: String,
    fields: BTreeMap<&'static str, Option<String>>,
    departments: Vec<String>,
    disabled: bool,
    /// Disabled by this source (the person left), so it may enable them again.
    left: bool,
}

/// The profile fields a source keeps, by column.
fn fields_of(p: &OrgPerson, department_names: &HashMap<&str, &str>) -> BTreeMap<&'static str, Option<String>> {
    let main = p.departments.first().and_then(|d| department_names.get(d.as_str())).map(|n| (*n).to_owned());
    BTreeMap::from([
        ("name", Some(p.name.clone()).filter(|n| !n.is_empty())),
        ("phone", p.mobile.clone().filter(|m| !m.is_empty())),
        ("email", p.email.clone().filter(|m| !m.is_empty())),
        ("title", p.title.clone().filter(|m| !m.is_empty())),
        ("employee_no", p.employee_no.clone().filter(|m| !m.is_empty())),
        ("department", main),
    ])
}

/// The hub's directory: departments synced from a source, and its members.
#[derive(Clone, Debug)]
pub struct Directory {
    db: Db,
}

/// A department as the hub holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldDepartment {
    /// The source's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its parent's id.
    pub parent: Option<String>,
}

impl Directory {
    /// In `db`.
    pub fn new(db: Db) -> Directory {
        Directory { db }
    }

    /// Every department name the directory knows, for choosing one: those
    /// synced (not removed) and those users are in, sorted.
    pub async fn names(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT name FROM departments WHERE removed = 0 \
             UNION SELECT department AS name FROM users WHERE department IS NOT NULL AND department <> '' AND disabled = 0 ORDER BY name",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// The departments of `source` the hub holds (not removed), by id.
    pub async fn departments(&self, source: &str) -> Result<Vec<HeldDepartment>> {
        let rows = sqlx::query("SELECT external_id, name, parent_id FROM departments WHERE source = $1 AND removed = 0 ORDER BY external_id")
            .bind(source)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok(HeldDepartment { id: r.try_get("external_id")?, name: r.try_get("name")?, parent: r.try_get("parent_id")? })).collect()
    }

    async fn held_departments(&self, source: &str) -> Result<HashMap<String, (String, Option<String>, bool)>> {
        let rows = sqlx::query("SELECT external_id, name, parent_id, removed FROM departments WHERE source = $1").bind(source).fetch_all(self.db.pool()).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("external_id")?, (r.try_get("name")?, r.try_get("parent_id")?, r.try_get::<i64, _>("removed")? != 0))))
            .collect()
    }

    async fn held_people(&self, source: &str) -> Result<HashMap<String, Held>> {
        let rows = sqlx::query(
            "SELECT l.subject, u.id, u.username, u.name, u.phone, u.email, u.title, u.employee_no, u.department, u.disabled, u.disabled_by \
             FROM user_links l JOIN users u ON u.id = l.user_id WHERE l.provider = $1",
        )
        .bind(source)
        .fetch_all(self.db.pool())
        .await?;
        let mut held = HashMap::new();
        for r in rows {
            let mut fields = BTreeMap::new();
            for f in ["name", "phone", "email", "title", "employee_no", "department"] {
                fields.insert(f, r.try_get::<Option<String>, _>(f)?);
            }
            let h = Held {
                user_id: r.try_get("id")?,
                username: r.try_get("username")?,
                fields,
                departments: Vec::new(),
                disabled: r.try_get::<i64, _>("disabled")? != 0,
                left: r.try_get::<i64, _>("disabled")? != 0 && r.try_get::<Option<String>, _>("disabled_by")?.as_deref() == Some(source),
            };
            held.insert(r.try_get::<String, _>("subject")?, h);
        }
        let rows = sqlx::query(
            "SELECT l.subject, d.external_id FROM user_departments ud JOIN departments d ON d.id = ud.department_id \
             JOIN user_links l ON l.user_id = ud.user_id AND l.provider = d.source WHERE d.source = $1 ORDER BY ud.position",
        )
        .bind(source)
        .fetch_all(self.db.pool())
        .await?;
        for r in rows {
            if let Some(h) = held.get_mut(&r.try_get::<String, _>("subject")?) {
                h.departments.push(r.try_get("external_id")?);
            }
        }
        Ok(held)
    }

    /// What a sync from `snapshot` of `source` would change.
    pub async fn plan(&self, source: &str, snapshot: &OrgSnapshot) -> Result<Vec<DirectoryChange>> {
        Ok(self.plan_with_held(source, snapshot).await?.0)
    }

    /// The plan, with the members as the hub holds them (by source id), which `apply` writes over.
    async fn plan_with_held(&self, source: &str, snapshot: &OrgSnapshot) -> Result<(Vec<DirectoryChange>, HashMap<String, Held>)> {
        let held = self.held_departments(source).await?;
        let mut changes = Vec::new();
        let wanted: HashSet<&str> = snapshot.departments.iter().map(|d| d.id.as_str()).collect();
        for d in &snapshot.departments {
            match held.get(&d.id) {
                None | Some((_, _, true)) => changes.push(DirectoryChange::DepartmentAdded { id: d.id.clone(), name: d.name.clone(), parent: d.parent.clone() }),
                Some((name, parent, false)) if *name != d.name || *parent != d.parent => changes.push(DirectoryChange::DepartmentChanged {
                    id: d.id.clone(),
                    name: d.name.clone(),
                    parent: d.parent.clone(),
                    was_name: name.clone(),
                    was_parent: parent.clone(),
                }),
                Some(_) => {}
            }
        }
        let mut gone: Vec<_> = held.iter().filter(|(id, (_, _, removed))| !removed && !wanted.contains(id.as_str())).collect();
        gone.sort_by(|a, b| a.0.cmp(b.0));
        for (id, (name, _, _)) in gone {
            changes.push(DirectoryChange::DepartmentRemoved { id: id.clone(), name: name.clone() });
        }
        let names: HashMap<&str, &str> = snapshot.departments.iter().map(|d| (d.id.as_str(), d.name.as_str())).collect();
        let people = self.held_people(source).await?;
        let mut taken: HashSet<String> = HashSet::new();
        for p in &snapshot.people {
            let fields = fields_of(p, &names);
            match people.get(&p.external_id) {
                Some(h) => {
                    if h.left {
                        changes.push(DirectoryChange::UserEnabled { username: h.username.clone() });
                    }
                    let mut differ: Vec<String> = fields.iter().filter(|(k, v)| h.fields.get(*k) != Some(v)).map(|(k, _)| (*k).to_owned()).collect();
                    if h.departments != p.departments {
                        differ.push("departments".into());
                    }
                    if !differ.is_empty() {
                        changes.push(DirectoryChange::UserChanged { username: h.username.clone(), fields: differ });
                    }
                }
                None => {
                    let username = self.free_username(source, &p.external_id, &taken).await?;
                    taken.insert(username.clone());
                    changes.push(DirectoryChange::UserAdded { username, external_id: p.external_id.clone(), name: p.name.clone() });
                }
            }
        }
        let present: HashSet<&str> = snapshot.people.iter().map(|p| p.external_id.as_str()).collect();
        let mut left: Vec<&Held> = people.iter().filter(|(id, h)| !h.disabled && !present.contains(id.as_str())).map(|(_, h)| h).collect();
        left.sort_by(|a, b| a.username.cmp(&b.username));
        changes.extend(left.into_iter().map(|h| DirectoryChange::UserDisabled { username: h.username.clone() }));
        Ok((changes, people))
    }

    /// A login name for a new member: the source's id where it is a valid
    /// name no one has, else the source's name before it.
    async fn free_username(&self, source: &str, external_id: &str, taken: &HashSet<String>) -> Result<String> {
        let cleaned: String = external_id.chars().map(|c| if c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') { c } else { '-' }).collect();
        for candidate in [cleaned.clone(), format!("{source}-{cleaned}")] {
            let Ok(name) = candidate.parse::<Username>() else { continue };
            if !taken.contains(name.as_str()) && Users::new(self.db.clone()).find(&name).await?.is_none() {
                return Ok(name.as_str().to_owned());
            }
        }
        Ok(format!("{source}-{}", random_token(6).to_lowercase()))
    }

    /// Applies a sync from `snapshot` of `source`; returns what changed.
    pub async fn apply(&self, source: &str, snapshot: &OrgSnapshot) -> Result<Vec<DirectoryChange>> {
        let (changes, held) = self.plan_with_held(source, snapshot).await?;
        let at = now();
        let names: HashMap<&str, &str> = snapshot.departments.iter().map(|d| (d.id.as_str(), d.name.as_str())).collect();
        let departments: HashMap<&str, &OrgDepartment> = snapshot.departments.iter().map(|d| (d.id.as_str(), d)).collect();
        let people: HashMap<&str, &OrgPerson> = snapshot.people.iter().map(|p| (p.external_id.as_str(), p)).collect();
        let mut tx = self.db.begin().await?;
        for c in &changes {
            match c {
                DirectoryChange::DepartmentAdded { id, .. } | DirectoryChange::DepartmentChanged { id, .. } => {
                    if let Some(d) = departments.get(id.as_str()) {
                        write_department(&mut tx, source, d, at).await?;
                    }
                }
                DirectoryChange::DepartmentRemoved { id, .. } => remove_department(&mut tx, source, id, at).await?,
                DirectoryChange::UserAdded { username, external_id, .. } => {
                    let user_id = create_user(&mut tx, source, username, external_id, at).await?;
                    if let Some(p) = people.get(external_id.as_str()) {
                        write_person(&mut tx, source, &user_id, p, &names, at).await?;
                    }
                }
                DirectoryChange::UserChanged { username, .. } => {
                    if let Some((ext, h)) = held.iter().find(|(_, h)| h.username == *username)
                        && let Some(p) = people.get(ext.as_str())
                    {
                        write_person(&mut tx, source, &h.user_id, p, &names, at).await?;
                    }
                }
                DirectoryChange::UserEnabled { username } => {
                    if let Some((_, h)) = held.iter().find(|(_, h)| h.username == *username) {
                        enable(&mut tx, source, &h.user_id, at).await?;
                    }
                }
                DirectoryChange::UserDisabled { .. } => {}
            }
        }
        tx.commit().await?;
        let users = Users::new(self.db.clone());
        for c in &changes {
            if let DirectoryChange::UserDisabled { username } = c {
                users.disable_by(&username.parse()?, Some(source)).await?;
            }
        }
        Ok(changes)
    }

    /// One department added or changed at the source (an event).
    pub async fn upsert_department(&self, source: &str, department: &OrgDepartment) -> Result<()> {
        let mut tx = self.db.begin().await?;
        write_department(&mut tx, source, department, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One department removed at the source (an event).
    pub async fn remove_department(&self, source: &str, id: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        remove_department(&mut tx, source, id, now()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One member added or changed at the source (an event): created and
    /// linked if new, else updated. Their departments must be known.
    pub async fn upsert_person(&self, source: &str, person: &OrgPerson) -> Result<DirectoryChange> {
        let held = self.held_departments(source).await?;
        let names: HashMap<&str, &str> = held.iter().filter(|(_, d)| !d.2).map(|(id, d)| (id.as_str(), d.0.as_str())).collect();
        let at = now();
        let existing = self.held_people(source).await?.remove(&person.external_id);
        let mut tx = self.db.begin().await?;
        let change = match existing {
            Some(h) => {
                write_person(&mut tx, source, &h.user_id, person, &names, at).await?;
                if h.left {
                    enable(&mut tx, source, &h.user_id, at).await?;
                    DirectoryChange::UserEnabled { username: h.username }
                } else {
                    DirectoryChange::UserChanged { username: h.username, fields: vec!["*".into()] }
                }
            }
            None => {
                let username = self.free_username(source, &person.external_id, &HashSet::new()).await?;
                let user_id = create_user(&mut tx, source, &username, &person.external_id, at).await?;
                write_person(&mut tx, source, &user_id, person, &names, at).await?;
                DirectoryChange::UserAdded { username, external_id: person.external_id.clone(), name: person.name.clone() }
            }
        };
        tx.commit().await?;
        Ok(change)
    }

    /// One member who left the source (an event): disabled, if linked and not already.
    pub async fn leave(&self, source: &str, external_id: &str) -> Result<Option<DirectoryChange>> {
        let Some(h) = self.held_people(source).await?.remove(external_id) else { return Ok(None) };
        if h.disabled {
            return Ok(None);
        }
        Users::new(self.db.clone()).disable_by(&h.username.parse()?, Some(source)).await?;
        Ok(Some(DirectoryChange::UserDisabled { username: h.username }))
    }
}

type Tx = civichub_store::Tx;

/// What marks the provider name of a source's second id for a person
/// (DingTalk's unionid beside its userid): a link to find them by, not a way to sign in.
const ALIAS_SUFFIX: &str = "-union";

/// The provider name under which `source`'s second ids are linked.
fn alias_provider(source: &str) -> String {
    format!("{source}{ALIAS_SUFFIX}")
}

/// Whether `source`'s directory keeps the person `user_id` (whose links are
/// `links`): it gave them a second id, or holds them in one of its departments.
pub(crate) async fn keeps(db: &Db, source: &str, user_id: &str, links: &[(String, String)]) -> Result<bool> {
    let alias = alias_provider(source);
    if links.iter().any(|(p, _)| *p == alias) {
        return Ok(true);
    }
    let member = sqlx::query(
        "SELECT 1 FROM user_departments ud JOIN departments d ON d.id = ud.department_id WHERE ud.user_id = $1 AND d.source = $2 AND d.removed = 0",
    )
    .bind(user_id)
    .bind(source)
    .fetch_optional(db.pool())
    .await?;
    Ok(member.is_some())
}

/// Whether links at `provider` are a source's second ids rather than logins.
pub(crate) fn is_alias_provider(provider: &str) -> bool {
    provider.ends_with(ALIAS_SUFFIX)
}

async fn write_department(tx: &mut Tx, source: &str, d: &OrgDepartment, at: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO departments (id, source, external_id, name, parent_id, removed, updated_at) VALUES ($1, $2, $3, $4, $5, 0, $6) \
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, parent_id = excluded.parent_id, removed = 0, updated_at = excluded.updated_at",
    )
    .bind(format!("{source}:{}", d.id))
    .bind(source)
    .bind(&d.id)
    .bind(&d.name)
    .bind(&d.parent)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Enables a member `source` had disabled when they left (never one an administrator disabled).
async fn enable(tx: &mut Tx, source: &str, user_id: &str, at: i64) -> Result<()> {
    sqlx::query("UPDATE users SET disabled = 0, disabled_by = NULL, updated_at = $3 WHERE id = $1 AND disabled = 1 AND disabled_by = $2")
        .bind(user_id)
        .bind(source)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn remove_department(tx: &mut Tx, source: &str, id: &str, at: i64) -> Result<()> {
    let key = format!("{source}:{id}");
    sqlx::query("UPDATE departments SET removed = 1, updated_at = $2 WHERE id = $1").bind(&key).bind(at).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM user_departments WHERE department_id = $1").bind(&key).execute(&mut **tx).await?;
    Ok(())
}

/// A new user without a password, linked to `external_id` at `source`; its id.
async fn create_user(tx: &mut Tx, source: &str, username: &str, external_id: &str, at: i64) -> Result<String> {
    let id = random_token(16);
    sqlx::query("INSERT INTO users (id, username, password_hash, roles, disabled, created_at, updated_at) VALUES ($1, $2, NULL, '', 0, $3, $3)")
        .bind(&id)
        .bind(username)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    crate::users::link_in(tx, &id, source, external_id, at).await?;
    Ok(id)
}

/// The source's profile and departments of `user_id`.
async fn write_person(tx: &mut Tx, source: &str, user_id: &str, p: &OrgPerson, names: &HashMap<&str, &str>, at: i64) -> Result<()> {
    let f = fields_of(p, names);
    sqlx::query(
        "UPDATE users SET name = $2, phone = $3, email = $4, email_verified = $5, title = $6, employee_no = $7, department = $8, updated_at = $9 WHERE id = $1",
    )
    .bind(user_id)
    .bind(f["name"].clone())
    .bind(f["phone"].clone())
    .bind(f["email"].clone())
    .bind(i64::from(f["email"].is_some()))
    .bind(f["title"].clone())
    .bind(f["employee_no"].clone())
    .bind(f["department"].clone())
    .bind(at)
    .execute(&mut **tx)
    .await?;
    if let Some(alias) = p.alias.as_deref().filter(|a| !a.is_empty()) {
        crate::users::link_in(tx, user_id, &alias_provider(source), alias, at).await?;
    }
    sqlx::query("DELETE FROM user_departments WHERE user_id = $1").bind(user_id).execute(&mut **tx).await?;
    for (position, d) in p.departments.iter().enumerate() {
        sqlx::query("INSERT INTO user_departments (user_id, department_id, position) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(user_id)
            .bind(format!("{source}:{d}"))
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
