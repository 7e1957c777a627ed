//! `outpost-controller serve`: the daemon. Its settings are the [`Config`] fields; this adds
//! only logging, signals and systemd's readiness notification around [`server::serve`].
//!
//! [`Config`]: outpost_controller::config::Config

use std::time::Duration;

use outpost_controller::config::{LogFormat, Settings};
use outpost_controller::server;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    /// Lifetime of agent certificates in seconds (overrides --agent-cert-days; for tests).
    #[arg(long, hide = true)]
    agent_cert_secs: Option<u64>,
}

pub async fn run(mut settings: Settings, args: &Args) -> anyhow::Result<()> {
    if let Some(v) = args.agent_cert_secs {
        settings.agent_cert_lifetime = Duration::from_secs(v.max(10));
    }
    init_tracing(settings.log_format);
    if settings.database_url.starts_with("sqlite:") {
        std::fs::create_dir_all(&settings.data_dir)?;
    }
    let stop = CancellationToken::new();
    stop_on_signals(stop.clone());
    server::serve(settings, stop, |_| {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    })
    .await?;
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Fires `stop` on SIGTERM or Ctrl-C.
fn stop_on_signals(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stop requested");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        stop.cancel();
    });
}
