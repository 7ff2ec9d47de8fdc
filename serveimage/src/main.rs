//! `diskimport-serve-image`: the node-pull server as a binary of its own,
//! built statically (docs/registry.md, "Node pull") so it runs inside any
//! container image, `FROM scratch` included.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(serveimage::main_with(&args));
}
