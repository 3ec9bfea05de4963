//! Key Vault secret bundles and error envelopes.
#![no_main]
use kvrun::keyvault;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(fetched) = keyvault::parse_bundle(body) {
        assert!(!fetched.value.expose_secret().contains('\0'));
    }
    let _ = keyvault::parse_error(403, None, body).is_absent();
});
