//! Secret references, in every origin and cloud, and the `--vault` forms.
#![no_main]
use kvrun::cloud::Cloud;
use kvrun::reference::{self, Origin, VaultUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    for origin in [Origin::Mapping, Origin::Environment] {
        if let Ok(Some(parsed)) = reference::parse(input, origin, Cloud::Public) {
            // Whatever parses must describe a well-formed secret.
            assert!(reference::validate_secret_name(&parsed.name).is_ok());
            if let Some(vault) = parsed.vault {
                assert!(vault.origin().starts_with("https://"));
            }
        }
    }
    let _ = VaultUrl::parse(input, Cloud::China);
    let _ = reference::validate_env_var_name(input);
});
