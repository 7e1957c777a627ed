//! `outpost-controller credentials`: the key that seals credentials at rest — check that every
//! stored credential opens with the keys on disk, or rotate to a new key.

use outpost_controller::pki::PkiPaths;
use outpost_controller::store::audit::Actor;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Check that every stored credential opens with the keys in the PKI directory (what the
    /// controller checks at start-up), and say which key seals them.
    Check,
    /// Seal every credential again with a new key, in one transaction, then make it the
    /// current `credentials.key`. The old key stays beside it as `credentials-<id>.key`, so
    /// database backups taken before stay readable; delete it once those backups are gone.
    /// Stop the controllers sharing this database first (a running one keeps sealing with the
    /// key it started with); copy the new key file to each, then start them.
    RotateKey,
}

pub async fn run(
    settings: &outpost_controller::config::Settings,
    args: &Args,
) -> anyhow::Result<()> {
    let store = super::store(settings).await?;
    let dir = PkiPaths::new(&settings.data_dir).dir;
    let result = match args.action {
        Action::Check => {
            let keyring = outpost_controller::credential::checked_keyring(&store, &dir).await?;
            let n = store.all_credentials().await?.len();
            println!(
                "{n} credential(s) open with the keys in {} (current key {})",
                dir.display(),
                keyring.current_id()
            );
            Ok(())
        }
        Action::RotateKey => {
            let (key, n) =
                outpost_controller::credential::rotate_key(&store, &dir, &Actor::system()).await?;
            println!(
                "{n} credential(s) and notification channel secret(s) sealed again with the new key {key}; the previous key file stays in {} for older backups",
                dir.display()
            );
            Ok(())
        }
    };
    store.close().await;
    result
}
