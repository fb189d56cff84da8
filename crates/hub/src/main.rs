use clap::Parser;
use hub::settings::{Cli, Command};
use hub::{Application, telemetry};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init_subscriber(std::env::var("HUB_LOG_JSON").is_ok_and(|v| v == "1"));
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(cli.settings).await?;
            app.run_until_stopped(true).await?;
        }
        Command::Migrate => hub::startup::migrate(&cli.settings).await?,
    }
    Ok(())
}
