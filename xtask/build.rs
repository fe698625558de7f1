//! Rebuilds xtask when a migration file is added or edited, so `sqlx::migrate!` embeds the current set.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
