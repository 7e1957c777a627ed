//! `outpost-controller migrate`: applies the embedded schema migrations, or rolls the newest
//! back, and says which ran.

use outpost_controller::config::Settings;

#[derive(clap::Args)]
pub struct Args {
    /// Roll back the newest N applied migrations instead.
    #[arg(long, value_name = "N")]
    down: Option<usize>,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<()> {
    let store = super::store(settings).await?;
    match args.down {
        Some(n) => {
            let undone = store.migrate_down(n).await?;
            for m in &undone {
                println!("rolled back {:04} {}", m.version, m.description);
            }
            println!("{} migration(s) rolled back", undone.len());
        }
        None => {
            let ran = store.migrate_up().await?;
            for m in &ran {
                println!("applied {:04} {}", m.version, m.description);
            }
            if ran.is_empty() {
                println!(
                    "schema is up to date ({} migrations applied)",
                    store.known_migrations()
                );
            } else {
                println!("{} migration(s) applied", ran.len());
            }
        }
    }
    store.close().await;
    Ok(())
}
