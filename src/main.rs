//! The `sqsbeat` binary: parse the command line, set up logging, dispatch,
//! map outcomes to exit codes (0 ok, 1 invalid input or failure, 2 usage).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use sqsbeat::cli::{Cli, Command, LogFormat};
use sqsbeat::{cmd, config};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: glibc kept the memory freed after
/// loading a large schedule (and a second arena's for the beat's start-up
/// work), so RSS at 100 000 entries stayed 83 MiB where mimalloc settles
/// at 60; it also spends 9 % fewer instructions per message. Built
/// without transparent huge pages (`no_thp`): with them, each thread's
/// first 2 MiB pages made an idle beat 14 MiB larger.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match dispatch(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    // The AWS SDK logs its own probes (instance metadata, credential
    // providers) as multi-kilobyte WARN lines before sqsbeat says, in one
    // line, what is missing and how to set it; its errors still show.
    let filter = EnvFilter::try_from_env("SQSBEAT_LOG").unwrap_or_else(|_| {
        EnvFilter::new(
            "info,aws_config=error,aws_smithy_runtime=error,aws_smithy_runtime_api=error",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<bool> {
    let config = config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Check { paths } => runtime()?.block_on(cmd::check::run(&paths, &config)),
        Command::Next {
            paths,
            entry,
            count,
            after,
            output,
        } => runtime()?.block_on(cmd::next::run(
            cmd::next::Args {
                paths: &paths,
                entry: entry.as_deref(),
                count: count as usize,
                // The CLI's one clock read: "now" is only a default here.
                after: after.unwrap_or_else(sqsbeat::clock::system_now),
                output,
            },
            &config,
        )),
        Command::Run { paths } => runtime()?.block_on(cmd::run::run(&paths, &config)),
        Command::Migrate => runtime()?.block_on(cmd::migrate::run(&config)),
        Command::Schedule(args) => runtime()?.block_on(cmd::jobs::schedule(
            *args,
            sqsbeat::clock::system_now(),
            &config,
        )),
        Command::Pending {
            task,
            queue,
            status,
            due_after,
            due_before,
            limit,
            output,
        } => {
            let filter = sqsbeat::store::jobs::Filter {
                task,
                queue,
                status: status.0,
                due_after,
                due_before,
                limit,
            };
            runtime()?.block_on(cmd::jobs::pending(filter, output, &config))
        }
        Command::Show { id, output } => runtime()?.block_on(cmd::jobs::show(id, output, &config)),
        Command::Cancel(args) => runtime()?.block_on(cmd::jobs::cancel(args, &config)),
        Command::Reschedule(args) => runtime()?.block_on(cmd::jobs::reschedule(
            args,
            sqsbeat::clock::system_now(),
            &config,
        )),
        Command::Backfill(args) => runtime()?.block_on(cmd::backfill::run(
            *args,
            sqsbeat::clock::system_now(),
            &config,
        )),
        Command::Status { output } => runtime()?.block_on(cmd::status::run(
            output,
            sqsbeat::clock::system_now(),
            &config,
        )),
        Command::Entries { command } => runtime()?.block_on(cmd::entries::run(
            command,
            sqsbeat::clock::system_now(),
            &config,
        )),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
