// `sqlx::migrate!` embeds jobmanager/migrations/ at compile time: a migration added without another change
// to the crate must still rebuild it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
