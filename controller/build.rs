// sqlx::migrate! embeds the migration files at compile time; without this a new file would
// not be noticed until something else changed.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
