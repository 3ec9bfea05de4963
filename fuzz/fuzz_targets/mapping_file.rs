//! The kvrun.toml mapping file, errors positioned inside the text.
#![no_main]
use kvrun::config::file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = file::parse(text, std::path::Path::new("kvrun.toml")) {
        assert!(e.line >= 1 && e.line <= text.lines().count().max(1) + 1, "{e}");
    }
});
