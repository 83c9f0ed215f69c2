// include_dir cannot tell cargo which files it read: re-embed whenever models/ changes, so
// installing the official ResNet18 weights takes effect on the next `cargo build`.
fn main() {
    println!("cargo:rerun-if-changed=models");
}
