//! Layered configuration: built-in defaults, then an optional TOML file
//! (`--config`), then `CIVICHUB_*` environment variables, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use civichub_store::DbUrl;
use clap::Args;
use serde::Deserialize;
use url::Url;

/// A secret setting (a key, a password): read like any other, never shown
/// by `Debug`, so a logged configuration does not leak it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Settings every subcommand accepts (storage among them).
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "CIVICHUB_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "CIVICHUB_LISTEN", global = true, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Directory for the embedded database and other state.
    #[arg(long, env = "CIVICHUB_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Public issuer URL, e.g. https://sso.example.gov.cn (default: http://LISTEN-ADDRESS).
    #[arg(long, env = "CIVICHUB_ISSUER", global = true, value_name = "URL")]
    pub issuer: Option<String>,
    /// sqlite://PATH or postgres://USER@HOST/DB (default: SQLite in the data directory).
    #[arg(long, env = "CIVICHUB_DATABASE_URL", global = true, value_name = "URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Log filter, e.g. info or civichub=debug.
    #[arg(long, env = "CIVICHUB_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,
    /// A website origin allowed to call the public knowledge-base API from browsers (repeatable).
    #[arg(long = "kb-cors-origin", env = "CIVICHUB_KB_CORS_ORIGINS", value_delimiter = ',', global = true, value_name = "ORIGIN")]
    pub kb_cors_origins: Vec<String>,
    /// Public knowledge-base requests per minute per source address (0: unlimited).
    #[arg(long, env = "CIVICHUB_KB_RATE_LIMIT", global = true, value_name = "N")]
    pub kb_rate_limit: Option<u32>,
    /// Public hotline requests (the citizens' form and status lookup) per minute per source address (0: unlimited).
    #[arg(long, env = "CIVICHUB_HOTLINE_RATE_LIMIT", global = true, value_name = "N")]
    pub hotline_rate_limit: Option<u32>,
    /// Seconds between sweeps of the hotline deadlines (due soon, overdue).
    #[arg(long, env = "CIVICHUB_HOTLINE_DEADLINE_SWEEP", global = true, value_name = "SECONDS")]
    pub hotline_deadline_sweep: Option<u64>,
    /// The key (32 bytes, base64) that seals callers' names and phones; every node sharing a
    /// database needs the same one. Default: made once in the data directory (hotline-data.key).
    #[arg(long, env = "CIVICHUB_HOTLINE_DATA_KEY", global = true, value_name = "BASE64", hide_env_values = true)]
    pub hotline_data_key: Option<Secret>,
    /// A yearly calendar file of public holidays and adjusted working days (`YYYY-MM-DD holiday|workday`
    /// per line), added to the built-in years (repeatable).
    #[arg(long = "hotline-calendar", env = "CIVICHUB_HOTLINE_CALENDARS", value_delimiter = ',', global = true, value_name = "FILE")]
    pub hotline_calendars: Vec<PathBuf>,
    /// TOML file of hotline time limits per category and urgency (`[[rules]]`, first match wins;
    /// see the README). Default: the limits of the domain notes.
    #[arg(long, env = "CIVICHUB_HOTLINE_TIME_LIMITS", global = true, value_name = "FILE")]
    pub hotline_time_limits: Option<PathBuf>,
    /// An upstream OpenID Connect provider staff may sign in through, one line:
    /// `name=N,issuer=URL,client_id=ID,client_secret=S[,scopes=openid profile email][,link_by=sub|email][,label=TEXT]`
    /// (repeatable; in the environment, separated by `;`; in a config file, `[[upstream_oidc]]` tables).
    #[arg(long = "upstream-oidc", env = "CIVICHUB_UPSTREAM_OIDC", value_delimiter = ';', global = true, value_name = "SPEC", hide_env_values = true)]
    pub upstream_oidc: Vec<Secret>,
    #[command(flatten)]
    pub messaging: MessagingArgs,
}

/// The messaging hub and its gateways; in a config file, the `[messaging]` table.
#[derive(Args, Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Messaging")]
pub struct MessagingArgs {
    /// NATS server with JetStream, e.g. nats://127.0.0.1:4222 (default: the embedded bus in the database).
    #[arg(long, env = "CIVICHUB_NATS_URL", global = true, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Seconds a sent message may stay unconfirmed before the next channel is tried.
    #[arg(long, env = "CIVICHUB_MESSAGE_FALLBACK_AFTER", global = true, value_name = "SECS")]
    pub message_fallback_after: Option<u64>,
    /// The same for urgent messages.
    #[arg(long, env = "CIVICHUB_URGENT_FALLBACK_AFTER", global = true, value_name = "SECS")]
    pub urgent_fallback_after: Option<u64>,
    /// Waits before each redelivery of a failed send, in seconds, comma-separated; the last repeats.
    #[arg(long, env = "CIVICHUB_MESSAGE_RETRY_BACKOFF", global = true, value_name = "SECS,...")]
    pub message_retry_backoff: Option<String>,
    /// Deliveries of a send order before it goes to the dead letters.
    #[arg(long, env = "CIVICHUB_MESSAGE_MAX_DELIVER", global = true, value_name = "N")]
    pub message_max_deliver: Option<u32>,
    /// Days messages (with every attempt) and dead letters are kept after their last change; 0 keeps them (default 180).
    #[arg(long, env = "CIVICHUB_MESSAGE_RETENTION_DAYS", global = true, value_name = "DAYS")]
    pub message_retention_days: Option<u64>,
    /// SMS gateway: cmpp or aliyun (default: none, no SMS channel).
    #[arg(long, env = "CIVICHUB_SMS_GATEWAY", global = true, value_name = "KIND")]
    pub sms_gateway: Option<String>,
    /// CMPP 2.0 gateway (ISMG) address, HOST:PORT.
    #[arg(long, env = "CIVICHUB_CMPP_ADDR", global = true, value_name = "ADDR")]
    pub cmpp_addr: Option<String>,
    /// CMPP SP id (Source_Addr, 6 characters).
    #[arg(long, env = "CIVICHUB_CMPP_SP_ID", global = true, value_name = "ID")]
    pub cmpp_sp_id: Option<String>,
    /// CMPP shared secret.
    #[arg(long, env = "CIVICHUB_CMPP_SECRET", global = true, value_name = "SECRET", hide_env_values = true)]
    pub cmpp_secret: Option<Secret>,
    /// CMPP source number (the hotline's SMS service number), e.g. 1069012345.
    #[arg(long, env = "CIVICHUB_CMPP_SRC_ID", global = true, value_name = "NUMBER")]
    pub cmpp_src_id: Option<String>,
    /// CMPP service id (Service_Id).
    #[arg(long, env = "CIVICHUB_CMPP_SERVICE_ID", global = true, value_name = "ID")]
    pub cmpp_service_id: Option<String>,
    /// Seconds a CMPP submit waits for the link, a window slot and its answer.
    #[arg(long, env = "CIVICHUB_CMPP_SUBMIT_TIMEOUT", global = true, value_name = "SECS")]
    pub cmpp_submit_timeout: Option<f64>,
    /// Unanswered CMPP submits allowed at once.
    #[arg(long, env = "CIVICHUB_CMPP_WINDOW", global = true, value_name = "N")]
    pub cmpp_window: Option<usize>,
    /// Alibaba Cloud SMS endpoint (default https://dysmsapi.aliyuncs.com).
    #[arg(long, env = "CIVICHUB_ALIYUN_SMS_ENDPOINT", global = true, value_name = "URL")]
    pub aliyun_sms_endpoint: Option<String>,
    /// Alibaba Cloud AccessKey id.
    #[arg(long, env = "CIVICHUB_ALIYUN_ACCESS_KEY_ID", global = true, value_name = "ID")]
    pub aliyun_access_key_id: Option<String>,
    /// Alibaba Cloud AccessKey secret.
    #[arg(long, env = "CIVICHUB_ALIYUN_ACCESS_KEY_SECRET", global = true, value_name = "SECRET", hide_env_values = true)]
    pub aliyun_access_key_secret: Option<Secret>,
    /// Alibaba Cloud SMS signature (SignName).
    #[arg(long, env = "CIVICHUB_ALIYUN_SMS_SIGN_NAME", global = true, value_name = "NAME")]
    pub aliyun_sms_sign_name: Option<String>,
    /// Alibaba Cloud template used when a message names none (its one parameter: content).
    #[arg(long, env = "CIVICHUB_ALIYUN_SMS_TEMPLATE", global = true, value_name = "CODE")]
    pub aliyun_sms_template: Option<String>,
    /// DingTalk new API base (default https://api.dingtalk.com).
    #[arg(long, env = "CIVICHUB_DINGTALK_API_BASE", global = true, value_name = "URL")]
    pub dingtalk_api_base: Option<String>,
    /// DingTalk old API base (default https://oapi.dingtalk.com).
    #[arg(long, env = "CIVICHUB_DINGTALK_OAPI_BASE", global = true, value_name = "URL")]
    pub dingtalk_oapi_base: Option<String>,
    /// DingTalk login base (default https://login.dingtalk.com).
    #[arg(long, env = "CIVICHUB_DINGTALK_LOGIN_BASE", global = true, value_name = "URL")]
    pub dingtalk_login_base: Option<String>,
    /// DingTalk app key (enables the DingTalk channel).
    #[arg(long, env = "CIVICHUB_DINGTALK_APP_KEY", global = true, value_name = "KEY")]
    pub dingtalk_app_key: Option<String>,
    /// DingTalk app secret.
    #[arg(long, env = "CIVICHUB_DINGTALK_APP_SECRET", global = true, value_name = "SECRET", hide_env_values = true)]
    pub dingtalk_app_secret: Option<Secret>,
    /// DingTalk agent id of the app that sends work notices.
    #[arg(long, env = "CIVICHUB_DINGTALK_AGENT_ID", global = true, value_name = "ID")]
    pub dingtalk_agent_id: Option<i64>,
    /// The organisation's DingTalk corpId: logins for another organisation are refused.
    #[arg(long, env = "CIVICHUB_DINGTALK_CORP_ID", global = true, value_name = "CORPID")]
    pub dingtalk_corp_id: Option<String>,
    /// Token of the DingTalk event callback (enables `POST /api/integrations/dingtalk/events`).
    #[arg(long, env = "CIVICHUB_DINGTALK_CALLBACK_TOKEN", global = true, value_name = "TOKEN", hide_env_values = true)]
    pub dingtalk_callback_token: Option<Secret>,
    /// EncodingAESKey (43 characters) of the DingTalk event callback.
    #[arg(long, env = "CIVICHUB_DINGTALK_CALLBACK_AES_KEY", global = true, value_name = "KEY", hide_env_values = true)]
    pub dingtalk_callback_aes_key: Option<Secret>,
    /// Offer "钉钉登录" on the login page (needs the DingTalk app settings).
    #[arg(long, env = "CIVICHUB_DINGTALK_LOGIN", global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub dingtalk_login: Option<bool>,
    /// Link a DingTalk account to the one CivicHub user with its mobile number on its first login.
    #[arg(long, env = "CIVICHUB_DINGTALK_LINK_BY_MOBILE", global = true, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub dingtalk_link_by_mobile: Option<bool>,
    /// Voice notification gateway base URL (enables the voice channel).
    #[arg(long, env = "CIVICHUB_VOICE_GATEWAY_URL", global = true, value_name = "URL")]
    pub voice_gateway_url: Option<String>,
    /// Voice gateway API key.
    #[arg(long, env = "CIVICHUB_VOICE_API_KEY", global = true, value_name = "KEY", hide_env_values = true)]
    pub voice_api_key: Option<Secret>,
    /// Caller number shown for voice notifications.
    #[arg(long, env = "CIVICHUB_VOICE_CALLER", global = true, value_name = "NUMBER")]
    pub voice_caller: Option<String>,
}

impl MessagingArgs {
    /// Each setting from `self` (flags, environment), else from `file`.
    fn over(&self, file: MessagingArgs) -> MessagingArgs {
        macro_rules! pick {
            ($($f:ident),*) => { MessagingArgs { $($f: self.$f.clone().or(file.$f)),* } };
        }
        pick!(
            nats_url, message_fallback_after, urgent_fallback_after, message_retry_backoff, message_max_deliver, message_retention_days, sms_gateway, cmpp_addr, cmpp_sp_id, cmpp_secret,
            cmpp_src_id, cmpp_service_id, cmpp_submit_timeout, cmpp_window, aliyun_sms_endpoint, aliyun_access_key_id, aliyun_access_key_secret,
            aliyun_sms_sign_name, aliyun_sms_template, dingtalk_api_base, dingtalk_oapi_base, dingtalk_login_base,
            dingtalk_app_key, dingtalk_app_secret, dingtalk_agent_id, dingtalk_corp_id, dingtalk_login, dingtalk_link_by_mobile,
            dingtalk_callback_token, dingtalk_callback_aes_key,
            voice_gateway_url, voice_api_key, voice_caller
        )
    }
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    issuer: Option<String>,
    database_url: Option<Secret>,
    log: Option<String>,
    kb_cors_origins: Option<Vec<String>>,
    kb_rate_limit: Option<u32>,
    hotline_rate_limit: Option<u32>,
    hotline_deadline_sweep: Option<u64>,
    hotline_data_key: Option<Secret>,
    hotline_calendars: Option<Vec<PathBuf>>,
    hotline_time_limits: Option<PathBuf>,
    upstream_oidc: Option<Vec<civichub_oidc_upstream::UpstreamConfig>>,
    #[serde(default)]
    messaging: MessagingArgs,
}

/// The configuration in force.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The issuer, if fixed by configuration.
    pub issuer: Option<Url>,
    /// The database.
    pub database: DbUrl,
    /// Log filter.
    pub log: String,
    /// Origins allowed to call the public knowledge-base API.
    pub kb_cors_origins: Vec<String>,
    /// Public knowledge-base requests per minute per address.
    pub kb_rate_limit: u32,
    /// Public hotline requests per minute per address.
    pub hotline_rate_limit: u32,
    /// Between sweeps of the hotline deadlines.
    pub hotline_deadline_sweep: std::time::Duration,
    /// The key sealing callers' data, if given.
    pub hotline_data_key: Option<Secret>,
    /// The working-day calendar: the built-in years and the configured files.
    pub hotline_calendar: civichub_hotline::Calendar,
    /// Time limits per category and urgency.
    pub hotline_time_limits: civichub_hotline::TimeLimits,
    /// Upstream OpenID Connect providers to sign in through.
    pub upstream_oidc: Vec<civichub_oidc_upstream::UpstreamConfig>,
    /// Messaging settings (flags and environment over the file's `[messaging]`).
    pub messaging: MessagingArgs,
}

impl Config {
    /// Resolves the layers.
    pub fn load(args: &GlobalArgs) -> Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = args.listen.clone().or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("invalid listen address {listen:?}: use HOST:PORT, e.g. 127.0.0.1:8080"))?;
        let data_dir = args.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("data"));
        let issuer = match args.issuer.clone().or(file.issuer) {
            None => None,
            Some(s) => {
                let url = Url::parse(&s).with_context(|| format!("invalid issuer URL {s:?}"))?;
                if !matches!(url.scheme(), "http" | "https") || url.query().is_some() || url.fragment().is_some() {
                    bail!("issuer {s:?} must be an http(s) URL without query or fragment");
                }
                // The pages and their redirects live at the root (/login, /account, …):
                // a hub behind a path prefix would send browsers where the proxy does not go.
                if !url.path().trim_end_matches('/').is_empty() {
                    bail!("issuer {s:?} must have no path: serve the hub at the root of its host name, e.g. https://sso.example.gov.cn");
                }
                Some(url)
            }
        };
        let database = match args.database_url.clone().or(file.database_url) {
            Some(url) => url.expose().parse::<DbUrl>()?,
            None => DbUrl::sqlite_in(&data_dir),
        };
        let log = args.log.clone().or(file.log).unwrap_or_else(|| "info".into());
        let kb_cors_origins = if args.kb_cors_origins.is_empty() { file.kb_cors_origins.unwrap_or_default() } else { args.kb_cors_origins.clone() };
        for origin in &kb_cors_origins {
            let url = Url::parse(origin).with_context(|| format!("invalid CORS origin {origin:?}"))?;
            if !matches!(url.scheme(), "http" | "https") || url.path() != "/" || origin.ends_with('/') {
                bail!("CORS origin {origin:?} must be scheme://host[:port], e.g. https://www.example.gov.cn");
            }
        }
        let kb_rate_limit = args.kb_rate_limit.or(file.kb_rate_limit).unwrap_or(120);
        let hotline_rate_limit = args.hotline_rate_limit.or(file.hotline_rate_limit).unwrap_or(20);
        let hotline_deadline_sweep = match args.hotline_deadline_sweep.or(file.hotline_deadline_sweep).unwrap_or(30) {
            s @ 1..=3600 => std::time::Duration::from_secs(s),
            _ => anyhow::bail!("--hotline-deadline-sweep must be 1–3600 seconds"),
        };
        let mut hotline_calendar = civichub_hotline::Calendar::builtin();
        let calendars = if args.hotline_calendars.is_empty() { file.hotline_calendars.unwrap_or_default() } else { args.hotline_calendars.clone() };
        for path in &calendars {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read hotline calendar {}", path.display()))?;
            hotline_calendar.add(&text).with_context(|| format!("invalid hotline calendar {}", path.display()))?;
        }
        let hotline_time_limits = match args.hotline_time_limits.clone().or(file.hotline_time_limits) {
            None => civichub_hotline::TimeLimits::default(),
            Some(path) => {
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read hotline time limits {}", path.display()))?;
                let limits: civichub_hotline::TimeLimits =
                    toml::from_str(&text).with_context(|| format!("invalid hotline time limits {}", path.display()))?;
                limits.check().with_context(|| format!("invalid hotline time limits {}", path.display()))?;
                limits
            }
        };
        let upstream_oidc = if args.upstream_oidc.is_empty() {
            let configs = file.upstream_oidc.unwrap_or_default();
            for c in &configs {
                c.check()?;
            }
            configs
        } else {
            args.upstream_oidc.iter().map(|s| civichub_oidc_upstream::UpstreamConfig::parse_flag(s.expose())).collect::<std::result::Result<_, _>>()?
        };
        let messaging = args.messaging.over(file.messaging);
        if let Some(g) = &messaging.sms_gateway
            && !matches!(g.as_str(), "cmpp" | "aliyun")
        {
            bail!("sms gateway {g:?} is unknown: use cmpp or aliyun");
        }
        Ok(Config {
            listen,
            data_dir,
            issuer,
            database,
            log,
            kb_cors_origins,
            kb_rate_limit,
            hotline_rate_limit,
            hotline_deadline_sweep,
            hotline_data_key: args.hotline_data_key.clone().or(file.hotline_data_key),
            hotline_calendar,
            hotline_time_limits,
            upstream_oidc,
            messaging,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("civichub.toml");
        std::fs::write(&file, "listen = \"0.0.0.0:9000\"\nissuer = \"https://sso.example.gov.cn\"\n").unwrap();
        let args = GlobalArgs { config: Some(file), listen: Some("127.0.0.1:7000".into()), ..Default::default() };
        let config = Config::load(&args).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(config.issuer.unwrap().as_str(), "https://sso.example.gov.cn/");
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert!(config.database.expose().starts_with("sqlite://data/civichub.db"));
    }

    #[test]
    fn an_issuer_with_a_path_is_refused() {
        for (issuer, ok) in [("https://sso.example.gov.cn", true), ("https://sso.example.gov.cn/", true), ("https://example.gov.cn/sso", false), ("https://x.cn/?a=1", false)] {
            let args = GlobalArgs { issuer: Some(issuer.into()), ..Default::default() };
            assert_eq!(Config::load(&args).is_ok(), ok, "{issuer}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("civichub.toml");
        std::fs::write(&file, "lisen = \"0.0.0.0:9000\"\n").unwrap();
        let err = Config::load(&GlobalArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
    }

    #[test]
    fn hotline_calendars_and_time_limits_come_from_files() {
        use civichub_hotline::{Limit, Urgency};
        let dir = tempfile::tempdir().unwrap();
        let calendar = dir.path().join("cn-2027.txt");
        std::fs::write(&calendar, "# 2027\n2027-01-01 holiday\n2027-02-07 workday\n").unwrap();
        let limits = dir.path().join("limits.toml");
        std::fs::write(
            &limits,
            "[[rules]]\ncategory_prefix = \"07\"\nsign = { hours = 4 }\nreply = { working_days = 2 }\n\n[[rules]]\nsign = { working_days = 1 }\nreply = { working_days = 7 }\n",
        )
        .unwrap();
        let args = GlobalArgs { hotline_calendars: vec![calendar.clone()], hotline_time_limits: Some(limits.clone()), ..Default::default() };
        let config = Config::load(&args).unwrap();
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert!(!config.hotline_calendar.is_working_day(day("2027-01-01")), "a Friday holiday from the file");
        assert!(config.hotline_calendar.is_working_day(day("2027-02-07")), "a Sunday worked, from the file");
        assert!(!config.hotline_calendar.is_working_day(day("2026-10-01")), "the built-in year stays");
        assert_eq!(config.hotline_time_limits.of(Some("070101"), Urgency::Normal), (Limit::Hours(4), Limit::WorkingDays(2)));
        assert_eq!(config.hotline_time_limits.of(Some("010101"), Urgency::Urgent), (Limit::WorkingDays(1), Limit::WorkingDays(7)));

        std::fs::write(&limits, "[[rules]]\nsign = { working_days = 0 }\nreply = { working_days = 7 }\n").unwrap();
        let err = Config::load(&args).unwrap_err();
        assert!(format!("{err:#}").contains("at least 1"), "{err:#}");
        std::fs::write(&limits, "[[rules]]\nsign = { days = 1 }\nreply = { working_days = 7 }\n").unwrap();
        assert!(Config::load(&args).is_err(), "an unknown unit is refused");
        std::fs::write(&calendar, "2027-01-01 vacation\n").unwrap();
        let err = Config::load(&GlobalArgs { hotline_calendars: vec![calendar], ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("cn-2027.txt"), "{err:#}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let args = GlobalArgs {
            database_url: Some("postgres://hub:pg-pass-word@127.0.0.1/test".parse().unwrap()),
            hotline_data_key: Some("c2VjcmV0LWRhdGEta2V5LTAxMjM0NTY3ODlhYmNkZWY=".parse().unwrap()),
            upstream_oidc: vec!["name=zj,issuer=https://id.example,client_id=c,client_secret=oidc-client-secret".parse().unwrap()],
            messaging: MessagingArgs { dingtalk_app_secret: Some("ding-app-secret".parse().unwrap()), cmpp_secret: Some("cmpp-pass".parse().unwrap()), ..Default::default() },
            ..Default::default()
        };
        let config = Config::load(&args).unwrap();
        let shown = format!("{args:?} {config:?}");
        for secret in ["pg-pass-word", "c2VjcmV0", "oidc-client-secret", "ding-app-secret", "cmpp-pass"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert_eq!(config.messaging.cmpp_secret.as_ref().map(Secret::expose), Some("cmpp-pass"), "still there to use");
    }
}
