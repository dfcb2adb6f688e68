//! The `goscope` command line. Errors end here as one line on stderr and a non-zero exit.
use std::process::ExitCode;

use clap::Parser;
use goscope::cli::{
    Cli, Command,
    attach::{self, AttachError},
    dump, inspect, run,
};

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Attach { pid, ring_buffer_size, no_events, top, fail_on, mut session } => {
            session.ring_bytes = ring_buffer_size;
            session.show_events = !no_events;
            session.top = top;
            session.fail_on = fail_on;
            runtime()?.block_on(attach::run(pid, session)).map_err(anyhow::Error::from)
        }
        Command::Run { include, exclude, scan_every, ring_buffer_size, events, k8s, mut session } => {
            session.ring_bytes = ring_buffer_size;
            session.show_events = events;
            session.k8s = run::k8s_lookup(&k8s, session.format)?;
            let options = run::RunOptions { selection: run::Selection { include, exclude }, scan_every, session };
            runtime()?.block_on(run::run(options)).map_err(anyhow::Error::from)
        }
        Command::Inspect { path, pid, format } => inspect::run(path, pid, format).map_err(anyhow::Error::from),
        Command::Dump { pid, format } => dump::run(pid, format).map_err(anyhow::Error::from),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match dispatch(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error's message already names its cause: print it once, on one line.
            eprintln!("goscope: {e}");
            match e.downcast_ref::<AttachError>() {
                // Distinct from operational failures (1), so scripts can tell them apart.
                Some(AttachError::FailOn(_)) => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
