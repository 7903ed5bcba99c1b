//! Admin subcommands. Their exact forms are relied on by scripts.

use std::io::Read;

use anyhow::{Context, Result, bail};
use civichub_identity::{Audit, ClientId, Clients, Keys, NewClient, NewUser, Password, RedirectUri, SigningAlg, Username, Users};
use civichub_store::Db;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user; the password is read from standard input.
    Add {
        /// Login name.
        username: String,
        /// Read the password from standard input (first line).
        #[arg(long)]
        password_stdin: bool,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Mobile number.
        #[arg(long)]
        phone: Option<String>,
        /// Department.
        #[arg(long)]
        department: Option<String>,
        /// Employee number.
        #[arg(long)]
        employee_no: Option<String>,
        /// Role (repeatable): agent, handler, supervisor, leader, admin.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List users.
    List,
    /// Disable a user: no more logins; sessions and tokens are revoked.
    Disable {
        /// Login name.
        username: String,
    },
    /// Link a user to their DingTalk account (work notices go to that userid).
    Link {
        /// Login name.
        username: String,
        /// The DingTalk userid.
        #[arg(long, value_name = "USERID")]
        dingtalk: String,
    },
    /// Remove a user's second factors (a lost phone): their next login needs only the password.
    ResetMfa {
        /// Login name.
        username: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register a client; a confidential client's secret is printed once.
    Add {
        /// Client id.
        client_id: String,
        /// Redirect URI (repeatable), matched exactly.
        #[arg(long = "redirect-uri", num_args = 1..)]
        redirect_uris: Vec<String>,
        /// A public client (no secret; PKCE with S256 required).
        #[arg(long)]
        public: bool,
        /// One of the city's own systems: no consent screen.
        #[arg(long)]
        first_party: bool,
        /// Where RP-initiated logout may return to (repeatable).
        #[arg(long = "post-logout-redirect-uri", num_args = 1..)]
        post_logout_redirect_uris: Vec<String>,
        /// Back-Channel Logout endpoint.
        #[arg(long)]
        backchannel_logout_uri: Option<String>,
        /// ID token signing algorithm: RS256 or ES256.
        #[arg(long, default_value = "RS256")]
        id_token_alg: String,
        /// A scope beyond the standard ones this client may ask for (repeatable), e.g. kb:read.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Logins to this client need a second factor (acr 2).
        #[arg(long)]
        require_mfa: bool,
    },
    /// List clients.
    List,
    /// Remove a client and revoke its tokens.
    Remove {
        /// Client id.
        client_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Add new signing keys; the previous ones stay published until what they signed expires.
    Rotate,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// The newest audit records, newest first, one JSON object per line.
    List {
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

async fn connect(config: &Config) -> Result<Db> {
    Db::connect(&config.database).await.with_context(|| format!("cannot open database {}", config.database))
}

fn read_password() -> Result<Password> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("cannot read the password from standard input")?;
    let line = input.lines().next().unwrap_or_default().to_owned();
    Ok(Password::new(line)?)
}

pub async fn user(config: &Config, cmd: UserCommand) -> Result<()> {
    let db = connect(config).await?;
    let users = Users::new(db.clone());
    match cmd {
        UserCommand::Add { username, password_stdin, name, email, phone, department, employee_no, roles } => {
            if !password_stdin {
                bail!("give the password on standard input with --password-stdin");
            }
            let username: Username = username.parse()?;
            let password = read_password()?;
            let user = users
                .add(&username, password, NewUser { name, email, phone, department, employee_no, roles })
                .await?;
            println!("user {} added (sub {})", user.username, user.id);
        }
        UserCommand::List => {
            let factors = civichub_identity::Mfa::new(db.clone()).summary().await?;
            // STATUS stays the last column (scripts read it); MFA has no spaces.
            println!("{:<20} {:<12} {:<20} {:<24} {:<18} STATUS", "USERNAME", "NAME", "DEPARTMENT", "ROLES", "MFA");
            for u in users.list().await? {
                let mfa = match factors.get(&u.id).copied().unwrap_or_default() {
                    (false, 0) => "-".to_owned(),
                    (true, 0) => "app".to_owned(),
                    (false, n) => format!("passkeys:{n}"),
                    (true, n) => format!("app,passkeys:{n}"),
                };
                println!(
                    "{:<20} {:<12} {:<20} {:<24} {:<18} {}",
                    u.username,
                    u.name.unwrap_or_default(),
                    u.department.unwrap_or_default(),
                    u.roles.join(","),
                    mfa,
                    if u.disabled { "disabled" } else { "active" }
                );
            }
        }
        UserCommand::Disable { username } => {
            let user = users.disable(&username.parse()?).await?;
            println!("user {} disabled; sessions ended and tokens revoked", user.username);
        }
        UserCommand::Link { username, dingtalk } => {
            let dingtalk = dingtalk.trim();
            if dingtalk.is_empty() || dingtalk.len() > 64 || dingtalk.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("--dingtalk must be a DingTalk userid (1-64 characters, no spaces)");
            }
            let user = users.link(&username.parse()?, "dingtalk", dingtalk).await?;
            println!("user {} linked to DingTalk userid {dingtalk}", user.username);
        }
        UserCommand::ResetMfa { username } => {
            let user = users.find(&username.parse()?).await?.with_context(|| format!("no user {username}"))?;
            let had = civichub_identity::Mfa::new(db.clone()).reset(&user.id).await?;
            Audit::new(db).record("mfa.reset", civichub_identity::Actor { user_id: Some(&user.id), ..Default::default() }, serde_json::json!({ "by": "admin", "had_factors": had })).await?;
            println!("{}", if had { format!("second factors of {} removed", user.username) } else { format!("{} had no second factor", user.username) });
        }
    }
    Ok(())
}

pub async fn client(config: &Config, cmd: ClientCommand) -> Result<()> {
    let db = connect(config).await?;
    let clients = Clients::new(db);
    match cmd {
        ClientCommand::Add {
            client_id,
            redirect_uris,
            public,
            first_party,
            post_logout_redirect_uris,
            backchannel_logout_uri,
            id_token_alg,
            scopes,
            require_mfa,
        } => {
            let parse_all = |v: Vec<String>| v.iter().map(|u| u.parse::<RedirectUri>()).collect::<Result<Vec<_>, _>>();
            let new = NewClient {
                client_id: client_id.parse::<ClientId>()?,
                redirect_uris: parse_all(redirect_uris)?,
                public,
                first_party,
                post_logout_redirect_uris: parse_all(post_logout_redirect_uris)?,
                backchannel_logout_uri: backchannel_logout_uri.map(|u| u.parse()).transpose()?,
                id_token_alg: id_token_alg.parse::<SigningAlg>()?,
                extra_scopes: scopes,
                require_mfa,
            };
            let (client, secret) = clients.add(new).await?;
            println!("client_id: {}", client.client_id);
            if let Some(secret) = secret {
                println!("client_secret: {secret}");
                eprintln!("store the secret now: it is kept only as a hash and cannot be shown again");
            }
        }
        ClientCommand::List => {
            println!("{:<24} {:<13} {:<6} REDIRECT_URIS", "CLIENT_ID", "TYPE", "ALG");
            for c in clients.list().await? {
                let kind = match (c.public, c.first_party) {
                    (true, true) => "public,1st",
                    (true, false) => "public",
                    (false, true) => "confid.,1st",
                    (false, false) => "confidential",
                };
                println!("{:<24} {:<13} {:<6} {}", c.client_id, kind, c.id_token_alg, c.redirect_uris.join(" "));
            }
        }
        ClientCommand::Remove { client_id } => {
            clients.remove(&client_id.parse()?).await?;
            println!("client {client_id} removed; its tokens are revoked");
        }
    }
    Ok(())
}

pub async fn keys(config: &Config, cmd: KeysCommand) -> Result<()> {
    let db = connect(config).await?;
    let keys = Keys::new(db);
    match cmd {
        KeysCommand::Rotate => {
            keys.ensure().await?;
            for kid in keys.rotate().await? {
                println!("new signing key: {kid}");
            }
        }
    }
    Ok(())
}

pub async fn audit(config: &Config, cmd: AuditCommand) -> Result<()> {
    let db = connect(config).await?;
    match cmd {
        AuditCommand::List { limit } => {
            for event in Audit::new(db).recent(limit.clamp(1, 10_000)).await? {
                println!("{}", serde_json::to_string(&event)?);
            }
        }
    }
    Ok(())
}
