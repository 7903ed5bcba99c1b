//! Layered configuration: built-in defaults, then an optional TOML file
//! (`--config`), then `CIVICHUB_*` environment variables, then flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use civichub_store::DbUrl;
use clap::Args;
use serde::Deserialize;
use url::Url;

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
    pub database_url: Option<String>,
    /// Log filter, e.g. info or civichub=debug.
    #[arg(long, env = "CIVICHUB_LOG", global = true, value_name = "FILTER")]
    pub log: Option<String>,
    /// A website origin allowed to call the public knowledge-base API from browsers (repeatable).
    #[arg(long = "kb-cors-origin", env = "CIVICHUB_KB_CORS_ORIGINS", value_delimiter = ',', global = true, value_name = "ORIGIN")]
    pub kb_cors_origins: Vec<String>,
    /// Public knowledge-base requests per minute per source address (0: unlimited).
    #[arg(long, env = "CIVICHUB_KB_RATE_LIMIT", global = true, value_name = "N")]
    pub kb_rate_limit: Option<u32>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    issuer: Option<String>,
    database_url: Option<String>,
    log: Option<String>,
    kb_cors_origins: Option<Vec<String>>,
    kb_rate_limit: Option<u32>,
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
                Some(url)
            }
        };
        let database = match args.database_url.clone().or(file.database_url) {
            Some(url) => url.parse::<DbUrl>()?,
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
        Ok(Config { listen, data_dir, issuer, database, log, kb_cors_origins, kb_rate_limit })
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
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("civichub.toml");
        std::fs::write(&file, "lisen = \"0.0.0.0:9000\"\n").unwrap();
        let err = Config::load(&GlobalArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
    }
}
