//! `TestApp`: one running `civichub serve` with its own store.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use openidconnect::core::{CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
};
use reqwest::redirect::Policy;
use url::Url;

/// Which database the app under test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs one scenario on both backends: `both!(name)` expects `async fn name(app: &TestApp)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await;
                    $crate::helpers::limited(super::$name(&app), || app.log()).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let app = $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await;
                    $crate::helpers::limited(super::$name(&app), || app.log()).await;
                }
            }
        )*
    };
}

/// Like `both!` for scenarios that start their own app: `both_backends!(name)`
/// expects `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::helpers::limited(super::$name($crate::helpers::Backend::Sqlite), String::new).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::helpers::limited(super::$name($crate::helpers::Backend::Postgres), String::new).await;
                }
            }
        )*
    };
}

/// The longest one scenario may run. A scenario that hangs (a request never
/// answered, an event never arriving) fails with what the app logged instead
/// of holding up the whole run; every HTTP request has its own, shorter limit.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(300);

/// The longest one HTTP request of a test may take.
pub const REQUEST_LIMIT: Duration = Duration::from_secs(60);

/// Runs `scenario` within [`SCENARIO_LIMIT`]; past it, fails with `log()`.
pub async fn limited<F: std::future::Future<Output = ()>>(scenario: F, log: impl FnOnce() -> String) {
    if tokio::time::timeout(SCENARIO_LIMIT, scenario).await.is_err() {
        panic!("the scenario did not finish within {SCENARIO_LIMIT:?}; the app logged:\n{}", log());
    }
}

/// The rest of the first line of a child's `stdout` that starts with
/// `prefix`, waiting at most `limit`; `None` if it did not come (the child
/// exited or is stuck). The rest of its output is read and dropped, so the
/// child never blocks on a full pipe.
pub fn announced(stdout: std::process::ChildStdout, prefix: &'static str, limit: Duration) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.strip_prefix(prefix) {
                let _ = tx.send(rest.to_owned());
                sent = true;
            }
        }
    });
    rx.recv_timeout(limit).ok()
}

/// Runs `cmd` to completion with `stdin` as its input, killing it past
/// `limit`; its output, or `None` when it could not start or had to be
/// killed. Tests never wait on a child without a limit.
pub fn run_limited(cmd: &mut Command, stdin: Option<&str>, limit: Duration) -> Option<Output> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().ok()?;
    if let Some(input) = stdin {
        child.stdin.take()?.write_all(input.as_bytes()).ok()?;
    }
    drop(child.stdin.take());
    // Read while it runs, so a child with much to say never blocks on a full pipe.
    fn drain(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = from.read_to_end(&mut bytes);
            bytes
        })
    }
    let readers = (drain(child.stdout.take()?), drain(child.stderr.take()?));
    let until = std::time::Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    Some(Output { status, stdout: readers.0.join().unwrap_or_default(), stderr: readers.1.join().unwrap_or_default() })
}

pub const PASSWORD: &str = "correct-horse-9";
pub const CALLBACK: &str = "http://rp.example/callback";

pub struct TestApp {
    pub base: String,
    pub backend: Backend,
    pub data_dir: tempfile::TempDir,
    database_url: Option<String>,
    pg_database: Option<String>,
    child: Child,
}

fn pg_admin_url() -> String {
    std::env::var("CIVICHUB_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn create_pg_database() -> (String, String) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let admin = pg_admin_url();
    let name = format!("civichub_t_{}", random_hex(8));
    let mut conn = sqlx::AnyConnection::connect(&admin).await.expect("PostgreSQL must be running (see tests/run.sh)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin);
    (format!("{base}/{name}"), name)
}

pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, &[]).await
    }

    /// A second hub node on this app's PostgreSQL database, with its own data
    /// directory (and so its own search index). The first app owns the database.
    pub async fn another_node(&self) -> TestApp {
        self.another_node_with(&[]).await
    }

    /// `another_node` with extra `serve` arguments.
    pub async fn another_node_with(&self, extra: &[&str]) -> TestApp {
        let url = self.database_url.clone().expect("several nodes share PostgreSQL");
        Self::start(self.backend, Some(url), None, extra).await
    }

    /// Starts the app with extra `serve` arguments.
    pub async fn spawn_with(backend: Backend, extra: &[&str]) -> TestApp {
        let (database_url, pg_database) = match backend {
            Backend::Sqlite => (None, None),
            Backend::Postgres => {
                let (url, name) = create_pg_database().await;
                (Some(url), Some(name))
            }
        };
        Self::start(backend, database_url, pg_database, extra).await
    }

    async fn start(backend: Backend, database_url: Option<String>, pg_database: Option<String>, extra: &[&str]) -> TestApp {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(data_dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_civichub"));
        cmd.arg("serve").arg("--data-dir").arg(data_dir.path());
        if !extra.contains(&"--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        if let Some(url) = &database_url {
            cmd.arg("--database-url").arg(url);
        }
        cmd.args(extra);
        cmd.env("CIVICHUB_LOG", "info,civichub::http=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("start civichub");
        let base = match announced(child.stdout.take().expect("stdout"), "civichub listening on ", Duration::from_secs(60)) {
            Some(b) => b,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                if let Some(name) = &pg_database {
                    drop_database(name);
                }
                let log = std::fs::read_to_string(data_dir.path().join("server.log")).unwrap_or_default();
                panic!("civichub did not start:\n{log}");
            }
        };
        TestApp { base, backend, data_dir, database_url, pg_database, child }
    }

    /// A direct connection to this app's database, for checking what is stored.
    pub async fn db(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let url = match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.path().join("civichub.db").display()),
        };
        sqlx::AnyConnection::connect(&url).await.expect("connect to the app's database")
    }

    /// The server's log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Runs an admin subcommand against this app's store.
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_civichub"));
        cmd.args(args).arg("--data-dir").arg(self.data_dir.path());
        if let Some(url) = &self.database_url {
            cmd.arg("--database-url").arg(url);
        }
        run_limited(&mut cmd, stdin, Duration::from_secs(120)).unwrap_or_else(|| panic!("civichub {args:?} did not finish within 120 s"))
    }

    pub fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.cli(args, stdin);
        assert!(
            out.status.success(),
            "civichub {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn add_user(&self, username: &str, extra: &[&str]) {
        let mut args = vec!["user", "add", username, "--password-stdin"];
        args.extend_from_slice(extra);
        self.cli_ok(&args, Some(&format!("{PASSWORD}\n")));
    }

    /// Registers a client; returns its secret for a confidential one.
    pub fn add_client(&self, client_id: &str, extra: &[&str]) -> Option<String> {
        let mut args = vec!["client", "add", client_id];
        if !extra.contains(&"--redirect-uri") {
            args.extend_from_slice(&["--redirect-uri", CALLBACK]);
        }
        args.extend_from_slice(extra);
        let out = self.cli_ok(&args, None);
        out.lines().find_map(|l| l.strip_prefix("client_secret: ")).map(str::to_owned)
    }

    pub async fn metadata(&self) -> CoreProviderMetadata {
        Self::metadata_of(&self.base).await
    }

    async fn metadata_of(issuer: &str) -> CoreProviderMetadata {
        CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.to_owned()).unwrap(), &http()).await.expect("discovery")
    }

    /// A relying party for `client_id`, configured from discovery.
    pub async fn rp(&self, client_id: &str, secret: Option<String>) -> Rp {
        Self::rp_of(&self.base, client_id, secret).await
    }

    /// A relying party of the provider at `issuer` (an app started with `--issuer`).
    pub async fn rp_of(issuer: &str, client_id: &str, secret: Option<String>) -> Rp {
        let client = CoreClient::from_provider_metadata(
            Self::metadata_of(issuer).await,
            ClientId::new(client_id.to_owned()),
            secret.map(ClientSecret::new),
        )
        .set_redirect_uri(RedirectUrl::new(CALLBACK.into()).unwrap());
        Rp { client }
    }
}

impl TestApp {
    /// Asks the hub to stop (SIGTERM, as a service manager does) and waits
    /// up to `wait` for it to exit; whether it did.
    pub async fn terminate(&mut self, wait: Duration) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let until = std::time::Instant::now() + wait;
        while std::time::Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(name) = &self.pg_database {
            drop_database(name);
        }
    }
}

/// Drops a test's PostgreSQL database, its connections first.
fn drop_database(name: &str) {
    let mut drop = Command::new("psql");
    drop.args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"]).arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    if run_limited(&mut drop, None, Duration::from_secs(30)).is_none() {
        eprintln!("dropping the test database {name} took longer than 30 s; left in place");
    }
}

/// An HTTP client that does not follow redirects (the RP's back channel).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).timeout(REQUEST_LIMIT).build().unwrap()
}

pub type RpClient =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

pub struct Rp {
    pub client: RpClient,
}

pub struct AuthRequest {
    pub url: Url,
    pub state: CsrfToken,
    pub nonce: Nonce,
    pub verifier: PkceCodeVerifier,
}

impl Rp {
    pub fn authorize(&self, scopes: &[&str]) -> AuthRequest {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = self
            .client
            .authorize_url(
                openidconnect::core::CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in scopes {
            req = req.add_scope(Scope::new((*s).to_owned()));
        }
        let (url, state, nonce) = req.url();
        AuthRequest { url, state, nonce, verifier }
    }

    pub async fn exchange(&self, code: &str, verifier: PkceCodeVerifier) -> openidconnect::core::CoreTokenResponse {
        self.client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .expect("token endpoint")
            .set_pkce_verifier(verifier)
            .request_async(&http())
            .await
            .expect("code exchange")
    }
}

/// A browser: keeps cookies, follows nothing by itself.
pub struct Browser {
    pub client: reqwest::Client,
}

/// What a browser ended on.
pub enum Landing {
    /// Redirected to the relying party's callback.
    Callback(Url),
    /// Stopped on a page of the provider.
    Page { status: u16, url: Url, body: String },
}

impl Landing {
    pub fn callback(self) -> Url {
        match self {
            Landing::Callback(u) => u,
            Landing::Page { status, url, body } => panic!("expected a redirect to the callback, got {status} at {url}:\n{body}"),
        }
    }

    pub fn page(self) -> (u16, String) {
        match self {
            Landing::Page { status, body, .. } => (status, body),
            Landing::Callback(u) => panic!("expected a page, got a redirect to {u}"),
        }
    }
}

/// A port nothing listens on now (for a server whose address others must know first).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The CSRF token of a page's forms.
pub fn csrf(body: &str) -> String {
    let at = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[at..][..body[at..].find('"').unwrap()].to_owned()
}

pub fn query_param(url: &Url, key: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

impl Browser {
    pub fn new() -> Self {
        Browser { client: reqwest::Client::builder().cookie_store(true).redirect(Policy::none()).timeout(REQUEST_LIMIT).build().unwrap() }
    }

    /// Follows redirects from `url` until the RP callback or a page.
    pub async fn visit(&self, url: &str) -> Landing {
        let resp = self.client.get(url).send().await.expect("GET");
        self.follow(resp).await
    }

    pub async fn follow(&self, mut resp: reqwest::Response) -> Landing {
        for _ in 0..10 {
            let here = resp.url().clone();
            if resp.status().is_redirection() {
                let location = resp.headers()["location"].to_str().unwrap().to_owned();
                let next = here.join(&location).unwrap();
                if next.as_str().starts_with(CALLBACK) || !next.as_str().starts_with(&format!("{}://{}", here.scheme(), here.authority())) {
                    return Landing::Callback(next);
                }
                resp = self.client.get(next).send().await.expect("GET");
                continue;
            }
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            return Landing::Page { status, url: here, body };
        }
        panic!("redirect loop");
    }

    /// Submits the page's form with `fields` filled in (hidden fields kept).
    pub async fn submit(&self, page_url: &Url, body: &str, fields: &[(&str, &str)]) -> Landing {
        let form = Form::parse(body).expect("page has a form");
        let mut values = form.inputs.clone();
        for (k, v) in fields {
            values.retain(|(name, _)| name != k);
            values.push(((*k).to_owned(), (*v).to_owned()));
        }
        let action = page_url.join(&form.action).unwrap();
        let resp = self.client.post(action).form(&values).send().await.expect("POST");
        self.follow(resp).await
    }

    /// Goes through login (and consent, if asked) until the callback.
    pub async fn sign_in(&self, start: &str, username: &str, password: &str) -> Url {
        let mut landing = self.visit(start).await;
        for _ in 0..3 {
            match landing {
                Landing::Callback(u) => return u,
                Landing::Page { url, body, status } => {
                    landing = if body.contains("name=\"password\"") {
                        self.submit(&url, &body, &[("username", username), ("password", password)]).await
                    } else if body.contains("name=\"decision\"") {
                        self.submit(&url, &body, &[("decision", "allow")]).await
                    } else {
                        panic!("unexpected page {status} at {url}:\n{body}");
                    }
                }
            }
        }
        landing.callback()
    }
}

/// The first form of a page: its action and its inputs with values.
pub struct Form {
    pub action: String,
    pub inputs: Vec<(String, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// Decodes the HTML entities a template engine may write in attribute values.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Form {
    pub fn parse(html: &str) -> Option<Form> {
        let start = html.find("<form")?;
        let end = html[start..].find("</form>")? + start;
        let form = &html[start..end];
        let open = &form[..form.find('>')?];
        let action = attr(open, "action").unwrap_or_default();
        let mut inputs = Vec::new();
        let mut rest = form;
        while let Some(i) = rest.find("<input") {
            let tag_end = rest[i..].find('>').map(|e| e + i)?;
            let tag = &rest[i..tag_end];
            if let Some(name) = attr(tag, "name")
                && attr(tag, "type").as_deref() == Some("hidden") {
                    inputs.push((name, attr(tag, "value").unwrap_or_default()));
                }
            rest = &rest[tag_end..];
        }
        Some(Form { action, inputs })
    }
}

/// A `nats-server` with JetStream of the test's own, on a free port with a
/// temporary store; killed on drop. `stop` and `start` simulate an outage
/// (same port, same store).
pub struct NatsServer {
    pub port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().unwrap().port();
        let mut server = NatsServer { port, store: tempfile::tempdir().expect("temp dir"), child: None };
        server.resume().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again after `stop`.
    pub async fn resume(&mut self) {
        let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (install nats-server): {e}"));
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A client of this server.
    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("connect to nats")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for up to `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client-credentials access token of a new first-party client with `scopes`.
pub fn service_token(app: &TestApp, scopes: &[&str]) -> impl std::future::Future<Output = String> + use<> {
    let mut args = vec!["--first-party"];
    for s in scopes {
        args.push("--scope");
        args.push(s);
    }
    let client = format!("svc-{}", random_hex(4));
    let secret = app.add_client(&client, &args).expect("a confidential client");
    let url = app.url("/token");
    async move {
        let body: serde_json::Value = http()
            .post(url)
            .basic_auth(client, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token JSON");
        body["access_token"].as_str().expect("access_token").to_owned()
    }
}
