//! PKCS#12 (.pfx) certificate files, with and without a password.
#![no_main]
use kvrun::credential::pkcs12;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|file: &[u8]| {
    let _ = pkcs12::parse(file, "");
    let _ = pkcs12::parse(file, "pässwörd");
});
