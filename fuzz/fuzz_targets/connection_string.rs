//! AzureServicesAuthConnectionString.
#![no_main]
use kvrun::credential::connection_string;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(pairs) = connection_string::parse(text) {
        assert!(pairs.keys().all(|k| !k.is_empty() && *k == k.to_ascii_lowercase()));
    }
});
