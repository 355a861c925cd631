// The migrations are embedded at compile time by refinery's macro, which
// cargo cannot see through: rebuild when a migration file is added or changed.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
