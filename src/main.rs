//! The `sqsbeat` binary: parse the command line, dispatch, map outcomes to
//! exit codes (0 ok, 1 invalid input or failure, 2 usage).

use std::process::ExitCode;

use clap::Parser;
use sqsbeat::cli::{Cli, Command};
use sqsbeat::{cmd, config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<bool> {
    let config = config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Check { paths } => cmd::check::run(&paths, &config),
        Command::Next {
            paths,
            entry,
            count,
            after,
            output,
        } => cmd::next::run(
            cmd::next::Args {
                paths: &paths,
                entry: entry.as_deref(),
                count: count as usize,
                // The CLI's one clock read: "now" is only a default here.
                after: after.unwrap_or_else(chrono::Utc::now),
                output,
            },
            &config,
        ),
    }
}
