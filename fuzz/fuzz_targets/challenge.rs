//! WWW-Authenticate challenges from vaults, and the audience rule applied to them.
#![no_main]
use kvrun::cloud;
use kvrun::keyvault::challenge;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|header: &str| {
    if let Some(parsed) = challenge::parse_bearer(header) {
        let _ = parsed.tenant();
        if let Some(audience) = parsed.audience() {
            let _ = cloud::challenge_host_allowed("myvault.vault.azure.net", &audience);
            let _ = cloud::known_audience(&audience);
        }
    }
});
