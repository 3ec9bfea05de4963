//! Token responses and error bodies of every credential source.
#![no_main]
use kvrun::credential::token_response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = token_response::parse(body, 1_700_000_000);
    let _ = token_response::parse_error_body(body);
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = token_response::parse_date(text);
    }
});
