//! The user directory.

use civichub_store::{Db, Row, now, random_token};
use serde::Serialize;

use crate::password;
use crate::values::{Password, Username};
use crate::{Error, Result};

/// A person who can sign in.
#[derive(Clone, Debug, Serialize)]
pub struct User {
    /// Stable subject identifier (`sub`), never reused.
    pub id: String,
    /// Login name.
    pub username: String,
    /// Display name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Mobile number.
    pub phone: Option<String>,
    /// Department (承办单位) the person works in.
    pub department: Option<String>,
    /// Employee number.
    pub employee_no: Option<String>,
    /// Roles: agent, handler, supervisor, leader, admin …
    pub roles: Vec<String>,
    /// A disabled user cannot sign in and loses every session.
    pub disabled: bool,
    /// When the profile last changed (Unix seconds).
    pub updated_at: i64,
}

/// What an administrator gives when adding a user.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// Display name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Mobile number.
    pub phone: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Employee number.
    pub employee_no: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
}

const COLUMNS: &str = "id, username, name, email, phone, department, employee_no, roles, disabled, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> Result<User> {
    let roles: String = row.try_get("roles")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        name: row.try_get("name")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
        department: row.try_get("department")?,
        employee_no: row.try_get("employee_no")?,
        roles: roles.split_whitespace().map(str::to_owned).collect(),
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The user directory on the hub's database.
#[derive(Clone, Debug)]
pub struct Users {
    db: Db,
}

impl Users {
    /// The directory in `db`.
    pub fn new(db: Db) -> Self {
        Users { db }
    }

    /// Adds a user with a password.
    pub async fn add(&self, username: &Username, password: Password, profile: NewUser) -> Result<User> {
        if self.find(username).await?.is_some() {
            return Err(Error::Conflict(format!("user {username}")));
        }
        let hash = password::hash(password).await?;
        let id = random_token(16);
        let now = now();
        for role in &profile.roles {
            if role.is_empty() || role.chars().any(char::is_whitespace) {
                return Err(Error::Invalid(format!("invalid role {role:?}")));
            }
        }
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, name, email, email_verified, phone, department, \
             employee_no, roles, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12)",
        )
        .bind(&id)
        .bind(username.as_str())
        .bind(hash)
        .bind(profile.name)
        .bind(profile.email.clone())
        .bind(i64::from(profile.email.is_some()))
        .bind(profile.phone)
        .bind(profile.department)
        .bind(profile.employee_no)
        .bind(profile.roles.join(" "))
        .bind(now)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        self.get(&id).await
    }

    /// A user by subject id.
    pub async fn get(&self, id: &str) -> Result<User> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {id}")))?;
        from_row(&row)
    }

    /// A user by login name.
    pub async fn find(&self, username: &Username) -> Result<Option<User>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE username = $1")))
            .bind(username.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The stored password hash and the user, for a login attempt.
    pub async fn credentials(&self, username: &Username) -> Result<Option<(User, Option<String>)>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS}, password_hash FROM users WHERE username = $1"
        )))
        .bind(username.as_str())
        .fetch_optional(self.db.pool())
        .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some((from_row(&row)?, row.try_get("password_hash")?))),
        }
    }

    /// Replaces a password hash with a stronger one of the same password,
    /// unless the password changed since `old` was read: a login's rehash
    /// must not put back a password just replaced. True when it was replaced.
    pub async fn rehash_password(&self, id: &str, old: &str, hash: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(hash)
            .bind(id)
            .bind(old)
            .execute(self.db.pool())
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Every user, by login name.
    pub async fn list(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users ORDER BY username")))
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Disables a user: no new logins, every SSO session ended, every token revoked.
    pub async fn disable(&self, username: &Username) -> Result<User> {
        self.disable_by(username, None).await
    }

    /// [`Users::disable`], by a directory `source` (the person left the
    /// organisation; its sync may enable them again) or by an administrator (`None`).
    pub async fn disable_by(&self, username: &Username, source: Option<&str>) -> Result<User> {
        let user = self.find(username).await?.ok_or_else(|| Error::NotFound(format!("user {username}")))?;
        let now = now();
        let mut tx = self.db.begin().await?;
        // Its sessions end as a logout ends them: the clients hear of it by their back-channel.
        crate::sessions::end_all_in(&mut tx, &user.id, None, None).await?;
        sqlx::query("UPDATE users SET disabled = 1, disabled_by = $3, updated_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&user.id)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.get(&user.id).await
    }

    /// Links `username` to its account `subject` at an outside `provider`
    /// (e.g. `dingtalk` and the DingTalk userid), replacing an earlier link
    /// of that account.
    pub async fn link(&self, username: &Username, provider: &str, subject: &str) -> Result<User> {
        let user = self.find(username).await?.ok_or_else(|| Error::NotFound(format!("user {username}")))?;
        self.link_id(&user.id, provider, subject).await?;
        Ok(user)
    }

    /// Links the user `user_id` to `subject` at `provider`, replacing earlier
    /// links of either.
    pub async fn link_id(&self, user_id: &str, provider: &str, subject: &str) -> Result<()> {
        let mut tx = self.db.begin().await?;
        link_in(&mut tx, user_id, provider, subject, now()).await?;
        tx.commit().await?;
        Ok(())
    }

}

/// Links `user_id` to `subject` at `provider` in `tx`, replacing earlier links of either.
pub(crate) async fn link_in(tx: &mut civichub_store::Tx, user_id: &str, provider: &str, subject: &str, at: i64) -> Result<()> {
    sqlx::query("DELETE FROM user_links WHERE provider = $1 AND (subject = $2 OR user_id = $3)")
        .bind(provider)
        .bind(subject)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO user_links (provider, subject, user_id, created_at) VALUES ($1, $2, $3, $4)")
        .bind(provider)
        .bind(subject)
        .bind(user_id)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A way a person signs in that is about to go.
#[derive(Clone, Copy, Debug)]
pub(crate) enum WayIn<'a> {
    /// The link to an outside account at this provider.
    Link(&'a str),
    /// The passkey with this id.
    Passkey(&'a str),
}

/// Refuses, with [`Error::Conflict`], to let `leaving` go if it is the last
/// way `user_id` signs in (a password, a link to an outside account, a
/// passkey; a directory's alias link signs no one in). Takes the person's
/// row for update first on PostgreSQL (on SQLite write transactions take
/// turns), so two removals at once cannot each count the other's way as
/// left and remove both.
pub(crate) async fn keep_a_way_in(tx: &mut civichub_store::Tx, user_id: &str, leaving: WayIn<'_>) -> Result<()> {
    let lock = civichub_store::Backend::of(tx).locking(" FOR UPDATE");
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT password_hash FROM users WHERE id = $1{lock}")))
        .bind(user_id)
        .fetch_optional(&mut **tx)
        .await?;
    let has_password = row.map(|r| r.try_get::<Option<String>, _>("password_hash")).transpose()?.flatten().is_some();
    let (link, passkey) = match leaving {
        WayIn::Link(provider) => (provider, ""),
        WayIn::Passkey(id) => ("", id),
    };
    let links: Vec<String> = sqlx::query("SELECT provider FROM user_links WHERE user_id = $1 AND provider <> $2")
        .bind(user_id)
        .bind(link)
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get("provider"))
        .collect::<std::result::Result<_, _>>()?;
    let links_left = links.iter().filter(|p| !crate::directory::is_alias_provider(p)).count();
    let passkeys_left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM passkeys WHERE user_id = $1 AND id <> $2")
        .bind(user_id)
        .bind(passkey)
        .fetch_one(&mut **tx)
        .await?
        .try_get("n")?;
    if !has_password && links_left == 0 && passkeys_left == 0 {
        return Err(Error::Conflict("this is the only way this person signs in: set a password first".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rehash_never_puts_back_a_password_changed_meanwhile() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&civichub_store::DbUrl::sqlite_in(dir.path())).await.expect("db");
        let users = Users::new(db);
        let name: Username = "zhang".parse().expect("username");
        let user = users.add(&name, Password::attempt("old-password-1".into()), NewUser::default()).await.expect("add");
        let hash_of = |users: Users, name: Username| async move { users.credentials(&name).await.expect("read").and_then(|(_, h)| h).expect("hash") };
        let read = hash_of(users.clone(), name.clone()).await;
        // The password changes while a login with the old one is being verified...
        sqlx::query("UPDATE users SET password_hash = '$argon2id$changed' WHERE id = $1").bind(&user.id).execute(users.db.pool()).await.expect("change");
        // ...so that login's rehash of the old one is not stored.
        assert!(!users.rehash_password(&user.id, &read, "$argon2id$old-again").await.expect("rehash"));
        assert_eq!(hash_of(users.clone(), name.clone()).await, "$argon2id$changed");
        assert!(users.rehash_password(&user.id, "$argon2id$changed", "$argon2id$stronger").await.expect("rehash"));
        assert_eq!(hash_of(users, name).await, "$argon2id$stronger");
    }

    #[tokio::test]
    async fn a_person_has_one_link_per_provider() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&civichub_store::DbUrl::sqlite_in(dir.path())).await.expect("db");
        let users = Users::new(db.clone());
        let user = users.add(&"qian".parse().expect("username"), Password::attempt("password-123".into()), NewUser::default()).await.expect("add");
        users.link_id(&user.id, "dingtalk", "ding-1").await.expect("link");
        users.link_id(&user.id, "dingtalk", "ding-2").await.expect("a new link replaces the old");
        let subjects: Vec<String> =
            sqlx::query("SELECT subject FROM user_links WHERE user_id = $1").bind(&user.id).fetch_all(db.pool()).await.expect("links").iter().map(|r| r.get("subject")).collect();
        assert_eq!(subjects, ["ding-2"]);
        let second = sqlx::query("INSERT INTO user_links (provider, subject, user_id, created_at) VALUES ('dingtalk', 'ding-3', $1, 0)").bind(&user.id).execute(db.pool()).await;
        assert!(second.is_err(), "the database refuses a second DingTalk account for one person");
    }

    #[tokio::test]
    async fn the_last_way_in_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&civichub_store::DbUrl::sqlite_in(dir.path())).await.expect("db");
        let run = |sql: &'static str| sqlx::query(sql).execute(db.pool());
        // Known only by DingTalk (the directory's alias link signs no one in).
        run("INSERT INTO users (id, username, created_at, updated_at) VALUES ('u', 'zhao', 0, 0)").await.expect("user");
        run("INSERT INTO user_links (provider, subject, user_id, created_at) VALUES ('dingtalk', 'ding-zhao', 'u', 0)").await.expect("link");
        run("INSERT INTO user_links (provider, subject, user_id, created_at) VALUES ('dingtalk-union', 'staff-9', 'u', 0)").await.expect("alias");
        let check = |leaving: WayIn<'static>| {
            let db = db.clone();
            async move {
                let mut tx = db.begin().await.expect("begin");
                let verdict = keep_a_way_in(&mut tx, "u", leaving).await;
                tx.rollback().await.expect("rollback");
                verdict
            }
        };
        assert!(matches!(check(WayIn::Link("dingtalk")).await, Err(Error::Conflict(_))), "the only way in");
        assert!(check(WayIn::Link("upstream")).await.is_ok(), "a link it does not have leaves DingTalk");
        // With a passkey too, either may go, but not both.
        run("INSERT INTO passkeys (id, user_id, name, credential, created_at) VALUES ('pk', 'u', '手机', '{}', 0)").await.expect("passkey");
        assert!(check(WayIn::Link("dingtalk")).await.is_ok());
        assert!(check(WayIn::Passkey("pk")).await.is_ok());
        run("DELETE FROM user_links WHERE provider = 'dingtalk'").await.expect("unlink");
        assert!(matches!(check(WayIn::Passkey("pk")).await, Err(Error::Conflict(_))), "now the passkey is the only way in");
        run("UPDATE users SET password_hash = '$argon2id$x' WHERE id = 'u'").await.expect("password");
        assert!(check(WayIn::Passkey("pk")).await.is_ok(), "a password is a way in");
    }
}

