use clap::Parser;

/// mimalloc: fewer CPU cycles in allocation on the delivery path (see docs/PERFORMANCE.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use hub::cli::{Cli, Command};
use hub::{Application, telemetry};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let tracing = telemetry::init_subscriber(std::env::var("HUB_LOG_JSON").is_ok_and(|v| v == "1"));
    // Every connection is a file descriptor: use all the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(cli.settings).await?;
            app.run_until_stopped(true).await?;
        }
        Command::Migrate => hub::startup::migrate(&cli.settings).await?,
        Command::Smoke(args) => match hub::smoke::run(&args).await {
            Ok(steps) => {
                for step in steps {
                    let took = step.took.as_secs_f64() * 1000.0;
                    println!("ok   {:<20} {took:>8.1} ms  {}", step.name, step.detail);
                }
                println!("smoke check passed: {}", args.url);
            }
            Err(e) => {
                eprintln!("smoke check FAILED at {}: {e:#}", args.url);
                std::process::exit(1);
            }
        },
    }
    if let Some(provider) = tracing {
        // The exporter's blocking client must not run on this runtime's thread.
        let _ = actix_web::rt::task::spawn_blocking(move || provider.shutdown()).await;
    }
    Ok(())
}
