//! The `kvrun` binary: everything happens in `kvrun::run`.

fn main() {
    std::process::exit(kvrun::run(std::env::args_os().collect()));
}
