//! `civichub`: one binary for the whole hub. This file is wiring only:
//! configuration, the admin command line, and HTTP composition.

mod admin;
mod channels;
mod config;
mod directory;
mod federation;
mod kb;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::GlobalArgs;

/// CivicHub: unified identity and single sign-on, the 12345 hotline hub and the knowledge base.
#[derive(Parser, Debug)]
#[command(name = "civichub", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve every endpoint over HTTP.
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Manage OpenID Connect clients (relying parties).
    #[command(subcommand)]
    Client(admin::ClientCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Read the audit trail.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// Manage the knowledge base.
    #[command(subcommand)]
    Kb(kb::KbCommand),
    /// Sync the department tree and its members from an outside directory.
    #[command(subcommand)]
    Directory(directory::DirectoryCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match config::Config::load(&cli.global) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve::run(config).await,
            Command::User(cmd) => admin::user(&config, cmd).await,
            Command::Client(cmd) => admin::client(&config, cmd).await,
            Command::Keys(cmd) => admin::keys(&config, cmd).await,
            Command::Audit(cmd) => admin::audit(&config, cmd).await,
            Command::Kb(cmd) => kb::run(&config, cmd).await,
            Command::Directory(cmd) => directory::run(&config, cmd).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
