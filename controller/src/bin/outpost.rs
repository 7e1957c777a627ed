//! `outpost`: the admin CLI, a client of the controller's HTTPS API.

use clap::Parser;

/// The Outpost admin CLI: log in, manage servers, playbooks, agents and users, launch jobs and
/// follow their output. It talks to the controller's HTTPS API (default https://localhost:8443).
///
/// The API and these commands arrive with the controller issue; this build only shows help.
#[derive(Parser)]
#[command(name = "outpost", version)]
struct Cli {
    /// The controller's API address.
    #[arg(long, env = "OUTPOST_URL", default_value = "https://localhost:8443")]
    url: String,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "error: the API at {} is not built yet; the admin commands arrive with the controller issue",
        cli.url
    );
    std::process::ExitCode::FAILURE
}
