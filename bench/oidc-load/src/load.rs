//! The measured operations and the closed-loop driver: N workers, each with
//! its own cookie jar and refresh token, repeat one operation until the
//! deadline (or the shared operation budget) is reached.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use reqwest::{Client, Url, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::browser::{Jar, Submitted, browse};

/// What the generator needs to know about one provider.
#[derive(Debug)]
pub struct Target {
    pub client: Client,
    pub discovery: Url,
    pub authorize: Url,
    pub token: Url,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// GET of the discovery document: the cheapest request a provider
    /// answers, the ceiling of this generator against it on this machine.
    Discovery,
    ClientCredentials,
    Refresh,
    CodeFlow,
    PasswordLogin,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "discovery" => Op::Discovery,
            "client_credentials" | "cc" => Op::ClientCredentials,
            "refresh" => Op::Refresh,
            "code_flow" | "code" => Op::CodeFlow,
            "password_login" | "login" => Op::PasswordLogin,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Discovery => "discovery",
            Op::ClientCredentials => "client_credentials",
            Op::Refresh => "refresh",
            Op::CodeFlow => "code_flow",
            Op::PasswordLogin => "password_login",
        }
    }
}

/// One worker's state: its browser session and its current refresh token.
#[derive(Debug, Default)]
pub struct Worker {
    jar: Jar,
    refresh_token: Option<String>,
    /// The account password_login signs in to, if not the target's.
    login: Option<String>,
}

impl Worker {
    /// A worker whose password logins sign in to `login` (or the target's user).
    pub fn logging_in_as(login: Option<String>) -> Worker {
        Worker { login, ..Worker::default() }
    }
}

fn random_b64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Target {
    /// An authorization request URL with fresh PKCE (S256), state and nonce;
    /// returns it with the code_verifier.
    fn authorization_url(&self, scope: &str, prompt: Option<&str>) -> (Url, String) {
        let verifier = random_b64(32);
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = self.authorize.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("scope", scope)
                .append_pair("state", &random_b64(12))
                .append_pair("nonce", &random_b64(12))
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            if let Some(p) = prompt {
                q.append_pair("prompt", p);
            }
        }
        (url, verifier)
    }

    /// Browser part of the code flow: authorize → (forms) → code.
    async fn authorize(
        &self,
        jar: &mut Jar,
        scope: &str,
        prompt: Option<&str>,
    ) -> Result<(String, String, Vec<Submitted>), String> {
        self.authorize_as(jar, scope, prompt, &self.username).await
    }

    /// [`Target::authorize`], signing in as `username`.
    async fn authorize_as(
        &self,
        jar: &mut Jar,
        scope: &str,
        prompt: Option<&str>,
        username: &str,
    ) -> Result<(String, String, Vec<Submitted>), String> {
        let (url, verifier) = self.authorization_url(scope, prompt);
        let (callback, submitted) = browse(
            &self.client,
            jar,
            url,
            &self.redirect_uri,
            username,
            &self.password,
        )
        .await?;
        let code = callback
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| format!("no code in {callback}"))?;
        Ok((code, verifier, submitted))
    }

    /// A token request with client_secret_basic (raw id:secret, no
    /// form-encoding); returns the JSON body of a 200 answer.
    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Value, String> {
        let basic = STANDARD.encode(format!("{}:{}", self.client_id, self.client_secret));
        let resp = self
            .client
            .post(self.token.clone())
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .form(form)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "token endpoint {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let json: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if json["access_token"].as_str().is_none() {
            return Err("no access_token".into());
        }
        Ok(json)
    }

    async fn exchange(&self, code: &str, verifier: &str) -> Result<Value, String> {
        self.token_request(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// Unmeasured preparation of a worker for an operation.
    pub async fn setup(&self, op: Op, w: &mut Worker) -> Result<(), String> {
        match op {
            Op::Discovery | Op::ClientCredentials | Op::PasswordLogin => Ok(()),
            // A live SSO session: one password login.
            Op::CodeFlow => {
                w.jar = Jar::default();
                self.authorize(&mut w.jar, "openid", None).await.map(|_| ())
            }
            // A refresh token (offline_access needs prompt=consent per OIDC).
            Op::Refresh => {
                w.jar = Jar::default();
                let (code, verifier, _) = self
                    .authorize(&mut w.jar, "openid offline_access", Some("consent"))
                    .await?;
                let tokens = self.exchange(&code, &verifier).await?;
                w.refresh_token = Some(
                    tokens["refresh_token"]
                        .as_str()
                        .ok_or("no refresh_token")?
                        .to_owned(),
                );
                Ok(())
            }
        }
    }

    /// One measured operation.
    pub async fn once(&self, op: Op, w: &mut Worker) -> Result<(), String> {
        match op {
            Op::Discovery => {
                let resp = self.client.get(self.discovery.clone()).send().await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                if !status.is_success() || !body.starts_with(b"{") {
                    return Err(format!("discovery {status}"));
                }
                Ok(())
            }
            Op::ClientCredentials => self
                .token_request(&[("grant_type", "client_credentials")])
                .await
                .map(|_| ()),
            Op::Refresh => {
                let rt = w.refresh_token.take().ok_or("no refresh token")?;
                let tokens = self
                    .token_request(&[("grant_type", "refresh_token"), ("refresh_token", &rt)])
                    .await?;
                w.refresh_token = Some(
                    tokens["refresh_token"]
                        .as_str()
                        .ok_or("refresh not rotated")?
                        .to_owned(),
                );
                Ok(())
            }
            Op::CodeFlow => {
                let (code, verifier, submitted) =
                    self.authorize(&mut w.jar, "openid", None).await?;
                if !submitted.is_empty() {
                    return Err(format!("session lost: forms {submitted:?}"));
                }
                self.exchange(&code, &verifier).await.map(|_| ())
            }
            Op::PasswordLogin => {
                let mut jar = Jar::default();
                let username = w.login.as_deref().unwrap_or(&self.username);
                let (_, _, submitted) = self.authorize_as(&mut jar, "openid", None, username).await?;
                if submitted != [Submitted::Login] {
                    return Err(format!("expected one login form, got {submitted:?}"));
                }
                Ok(())
            }
        }
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process (all threads), in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); index 0 here is field 3. USER_HZ is 100.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

pub struct Settings {
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub max_ops: u64,
    pub pid: Option<u32>,
}

/// Runs `op` on every worker for the warm-up, then for the measured period.
/// Returns the workers (for reuse) and a JSON summary.
pub async fn measure(
    target: &Arc<Target>,
    op: Op,
    workers: Vec<Worker>,
    s: &Settings,
) -> (Vec<Worker>, Value) {
    // Setup, one worker after the other (keeps login load out of the run).
    let mut ready = Vec::new();
    let mut setup_errors = Vec::new();
    for mut w in workers {
        match target.setup(op, &mut w).await {
            Ok(()) => ready.push(w),
            Err(e) => setup_errors.push(e),
        }
    }
    let (mut warmup_errors, mut warmup_error) = (0, None);
    if !s.warmup.is_zero() {
        (ready, _, warmup_errors, warmup_error) =
            drive(target, op, ready, s.warmup, u64::MAX).await;
    }
    let (rss_peak, sampling) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(true)));
    if let Some(pid) = s.pid {
        let (peak, on) = (rss_peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while on.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid).unwrap_or(0), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let (server_cpu, own_cpu) = (s.pid.and_then(|p| cpu_seconds(Some(p))), cpu_seconds(None));
    let started = Instant::now();
    let (workers, mut latencies, errors, first_error) =
        drive(target, op, ready, s.duration, s.max_ops).await;
    let elapsed = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let cpu_share = |before: Option<f64>, pid: Option<u32>| {
        Some(((cpu_seconds(pid)? - before?) / elapsed * 100.0).round())
    };

    latencies.sort_unstable();
    let pct = |p: f64| -> Option<f64> {
        let i = ((latencies.len() as f64 * p).ceil() as usize).checked_sub(1)?;
        Some(f64::from(latencies[i]) / 1000.0)
    };
    let summary = json!({
        "op": op.name(),
        "workers": workers.len(),
        "ok": latencies.len(),
        "errors": errors,
        "first_error": setup_errors.first().map(|e| format!("setup: {e}"))
            .or(warmup_error.map(|e| format!("warm-up: {e}")))
            .or(first_error),
        "warmup_errors": warmup_errors,
        "setup_errors": setup_errors.len(),
        "seconds": elapsed,
        "ops_per_sec": latencies.len() as f64 / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "server_cpu_pct": s.pid.and_then(|p| cpu_share(server_cpu, Some(p))),
        "generator_cpu_pct": cpu_share(own_cpu, None),
        "peak_rss_kib": s.pid.map(|_| rss_peak.load(Ordering::Relaxed)),
    });
    (workers, summary)
}

/// The closed loop: each worker repeats `op` until `duration` has passed or
/// `max_ops` operations were started in all; a worker stops after 50
/// consecutive errors. Latencies are in microseconds.
async fn drive(
    target: &Arc<Target>,
    op: Op,
    workers: Vec<Worker>,
    duration: Duration,
    max_ops: u64,
) -> (Vec<Worker>, Vec<u32>, u64, Option<String>) {
    let deadline = Instant::now() + duration;
    let started = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut w| {
            let (target, started) = (target.clone(), started.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors, mut streak, mut first) = (Vec::new(), 0u64, 0, None);
                while Instant::now() < deadline
                    && started.fetch_add(1, Ordering::Relaxed) < max_ops
                    && streak < 50
                {
                    let t = Instant::now();
                    match target.once(op, &mut w).await {
                        Ok(()) => {
                            lat.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                            streak = 0;
                        }
                        Err(e) => {
                            errors += 1;
                            streak += 1;
                            first.get_or_insert(e);
                        }
                    }
                }
                (w, lat, errors, first)
            })
        })
        .collect();
    let (mut workers, mut latencies, mut errors, mut first_error) =
        (Vec::new(), Vec::new(), 0, None);
    for task in tasks {
        let (w, lat, e, first) = task.await.expect("worker task panicked");
        workers.push(w);
        latencies.extend(lat);
        errors += e;
        first_error = first_error.or(first);
    }
    (workers, latencies, errors, first_error)
}
