//! `outpost-controller init`: the CA, the controller's certificate and the first admin account.

use std::time::Duration;

use outpost_controller::config::Settings;
use outpost_controller::model::Role;
use outpost_controller::pki::{self, PkiPaths};
use outpost_controller::store::audit::Actor;
use outpost_controller::store::users::NewUser;

#[derive(clap::Args)]
pub struct Args {
    /// DNS names and IP addresses agents use to reach this controller (repeatable)
    /// [default: localhost, 127.0.0.1 and this host's name].
    #[arg(long = "name")]
    names: Vec<String>,
    /// The first admin's user name.
    #[arg(long, default_value = "admin")]
    admin_user: String,
    /// The first admin's email.
    #[arg(long, default_value = "admin@localhost.localdomain")]
    admin_email: String,
    /// The first admin's password (8 to 72 bytes); read from the environment, never a flag.
    #[arg(long = "admin-password-env", default_value = "OUTPOST_ADMIN_PASSWORD")]
    admin_password_env: String,
    /// Replace an existing CA (every enrolled agent must enrol again).
    #[arg(long)]
    force: bool,
}

pub async fn run(settings: &Settings, args: &Args) -> anyhow::Result<()> {
    let paths = PkiPaths::new(&settings.data_dir);
    let mut names = args.names.clone();
    if names.is_empty() {
        names = vec!["localhost".into(), "127.0.0.1".into()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim().to_owned();
            if !h.is_empty() && !names.contains(&h) {
                names.push(h);
            }
        }
    }
    let password = std::env::var(&args.admin_password_env).ok();
    let store = super::store(settings).await?;
    store.migrate_up().await?;
    let pki = pki::init(
        &paths,
        &names,
        Duration::from_secs(10 * 365 * 86400),
        Duration::from_secs(365 * 86400),
        args.force,
    )?;
    println!(
        "CA and server certificate written to {} (names: {})",
        paths.dir.display(),
        names.join(", ")
    );
    println!("CA fingerprint (sha256): {}", pki.ca.fingerprint());
    match password {
        Some(pw) => {
            let user = store
                .create_user(
                    &NewUser {
                        username: args.admin_user.clone(),
                        email: args.admin_email.clone(),
                        password: pw,
                        role: Role::Admin,
                        must_change_password: false,
                    },
                    &Actor::system(),
                )
                .await?;
            println!("admin account '{}' created", user.username);
        }
        None => println!(
            "no admin created: set {} to create the first admin",
            args.admin_password_env
        ),
    }
    store.close().await;
    Ok(())
}
