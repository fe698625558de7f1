//! Rebuilds infra-pg when a migration file is added or edited, so `sqlx::migrate!` embeds the current set
//! (cargo otherwise sees no change in this crate's sources and keeps the old embedded list).

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
