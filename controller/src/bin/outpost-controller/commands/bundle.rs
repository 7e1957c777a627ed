//! `outpost-controller bundle`: an install bundle for one new agent, written through a 0600
//! temporary file (it holds a one-time token) or to standard output.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use outpost_controller::bundle::{self, BundleError, BundleRequest, Origin};
use outpost_controller::config::Settings;
use outpost_controller::pki::{self, PkiPaths};
use outpost_controller::store::audit::Actor;

// The agent binary is the `agent_binary` setting (`--agent-binary`), which this command takes.
#[derive(clap::Args)]
pub struct Args {
    /// The agent's name (unique), e.g. bastion-fra1.
    #[arg(long)]
    name: String,
    /// A label for the agent, e.g. dc=fra1 (repeatable); servers tagged alike are routed to it.
    #[arg(long = "label", value_parser = outpost_protocol::message::parse_label)]
    labels: Vec<(String, String)>,
    /// A host the bastion reaches this controller at, among the names of its certificate
    /// (repeatable; the agent tries them in turn) [default: those names, loopback ones left out].
    #[arg(long = "address", value_name = "HOST")]
    addresses: Vec<String>,
    /// Hours until the token expires.
    #[arg(long, default_value_t = 24)]
    ttl_hours: u64,
    /// Where to write the bundle, or - for standard output [default: outpost-agent-NAME.tar.gz].
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace FILE if it exists.
    #[arg(long)]
    force: bool,
    /// The agents' UDP port, if not the configured listen port [default: 7443].
    #[arg(long)]
    agent_port: Option<u16>,
    /// The enrolment UDP port, if not the configured enroll_listen port [default: 7444].
    #[arg(long)]
    enroll_port: Option<u16>,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<()> {
    use std::io::Write;

    let pki = pki::load(&PkiPaths::new(&settings.data_dir))?;
    let origin = Origin {
        names: pki.server_names(),
        agent_port: args.agent_port.unwrap_or(settings.listen.port()),
        enroll_port: args.enroll_port.unwrap_or(settings.enroll_listen.port()),
        ca_fingerprint: pki.ca.fingerprint(),
        agent_binary: settings.agent_binary.clone(),
    };
    bundle::check_name(&args.name)?;
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("outpost-agent-{}.tar.gz", args.name)));
    if !to_stdout && !args.force && output.exists() {
        bail!(
            "{} exists (another bundle, perhaps with an unused token): pass --force to replace it, or -o another file",
            output.display()
        );
    }
    let store = super::store(settings).await?;
    store.migrate_up().await?;
    let request = BundleRequest {
        name: args.name.clone(),
        labels: args.labels.clone(),
        hosts: args.addresses.clone(),
        ttl: chrono::Duration::hours(i64::try_from(args.ttl_hours).unwrap_or(24)),
    };
    let bundle = bundle::prepare(&store, &origin, request, &Actor::system()).await?;
    let token_id = bundle.token_id;
    let written = if to_stdout {
        let stdout = std::io::stdout().lock();
        bundle
            .write(std::io::BufWriter::new(stdout))
            .and_then(|mut w| Ok(w.flush()?))
            .map_err(anyhow::Error::from)
    } else {
        write_private_file(&output, |f| bundle.write(f).map(|_| ()))
    };
    if let Err(e) = written {
        // A token nobody can have must not stay valid.
        let _ = store
            .delete_enrollment_token(token_id, &Actor::system())
            .await;
        store.close().await;
        return Err(e);
    }
    eprintln!("{}", bundle.summary());
    if !to_stdout {
        eprintln!(
            "wrote {} (mode 0600: it holds the token). On a machine with SSH to the bastion:\n  tar xzf {} && cd {} && ansible-playbook -i BASTION, install.yml",
            output.display(),
            output.display(),
            bundle.dir_name()
        );
    }
    store.close().await;
    Ok(())
}

/// Writes `path` through a 0600 temporary file beside it, renamed into place when complete.
fn write_private_file(
    path: &Path,
    write: impl FnOnce(std::fs::File) -> Result<(), BundleError>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("partial");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    if let Err(e) = write(file) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move the bundle to {}", path.display()))
}
