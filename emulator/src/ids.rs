//! Random and derived identifiers: GUIDs for request ids, trace ids and
//! correlation ids, 32-hex secret versions, and the hex/base64url encodings
//! shared by tokens and certificates.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// `n` random bytes from the OS generator. An OS without a working random
/// source cannot run TLS either, so failure here falls back to zeros rather
/// than aborting a request.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = SystemRandom::new().fill(&mut b);
    b
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` from 16 bytes.
pub(crate) fn format_guid(b: &[u8; 16]) -> String {
    let h = hex(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A random version-4 GUID.
pub(crate) fn new_guid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_guid(&b)
}

/// A new secret version id: 32 lowercase hex characters, like Key Vault's.
pub(crate) fn new_version_id() -> String {
    hex(&random_bytes::<16>())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

pub(crate) fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    // Tolerate padding: some encoders add it even where JWT forbids it.
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let g = new_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
        let v = new_version_id();
        assert!(crate::config::valid_version_id(&v), "{v}");
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(
            b64url_decode(&b64url(b"hi?>")).as_deref(),
            Some(&b"hi?>"[..])
        );
        assert_eq!(b64url_decode("aGk="), Some(b"hi".to_vec()));
    }
}
