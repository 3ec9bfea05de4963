//! A small, strict reader of PKCS#12 files (RFC 7292; `.pfx`, `.p12`): the certificates
//! and the private key of a password-protected file, for the service principal's
//! certificate credential.
//!
//! What it reads, which covers the algorithms OpenSSL 1.x and 3.x, Windows, Azure Key
//! Vault and Java use:
//! - integrity: password MAC with HMAC-SHA1/-SHA256/-SHA384/-SHA512, its key made by the
//!   PKCS#12 key-derivation function (RFC 7292 appendix B, implemented here over ring's
//!   digests), or no MAC at all;
//! - privacy: the authenticated safe's `data` and `encryptedData` contents, and
//!   `pkcs8ShroudedKeyBag`s, encrypted with PBES1-PKCS12 (`pbeWithSHAAnd3-KeyTripleDES-CBC`,
//!   `...2-KeyTripleDES-CBC`, `...128BitRC2-CBC`, `...40BitRC2-CBC`) or PBES2 (PBKDF2 with
//!   HMAC-SHA1/-SHA256/-SHA384/-SHA512, then AES-128/192/256-CBC or DES-EDE3-CBC);
//! - bags: `keyBag`, `pkcs8ShroudedKeyBag` and `certBag` (`x509Certificate`); other bags
//!   (CRLs, secrets, nested safe contents) and all bag attributes are skipped.
//!
//! What it refuses, each with its own error: public-key integrity and privacy modes
//! (`signedData`, `envelopedData`), PBMAC1 (RFC 9579), RC4, PBES2 ciphers other than
//! the above, BER encodings (indefinite lengths, constructed strings), iteration counts
//! above [`MAX_ITERATIONS`], files with more than one private key, and files whose
//! certificates do not include the key's own.
//!
//! The DER reader is hand-written and minimal: one-byte tags, definite lengths, no data
//! past an element's end or after the last one. The parser follows the fixed shape of
//! the format, so its nesting depth is bounded by the code, not by the input. Password
//! bytes, derived keys, decrypted contents and the key itself live in `Zeroizing`
//! buffers (ring's HMAC key schedule is its own and is not zeroized).
//!
//! Passwords: the PKCS#12 KDF takes the password as a NUL-terminated big-endian UTF-16
//! string (BMPString), PBES2 takes its UTF-8 bytes. Writers disagree on what an empty
//! password is, so, like OpenSSL, the reader tries both: first the empty BMPString (two
//! NUL bytes, what OpenSSL writes), then no password at all (zero bytes).

use std::num::NonZeroU32;

use cbc::cipher::array::Array;
use cbc::cipher::{BlockCipherDecrypt, BlockModeDecrypt, InnerIvInit, KeyInit};
use ring::{digest, hmac, pbkdf2};
use zeroize::Zeroizing;

/// The most iterations of a key derivation that a file may ask for: far above what
/// writers use (OpenSSL's default is 2,048, Windows' 2,000), and low enough that a
/// hostile file cannot keep kvrun busy for long.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// What a PKCS#12 file holds, as kvrun needs it.
pub struct Pkcs12 {
    /// The certificates, DER: the one whose public key is the private key's first, then
    /// the others in the file's order.
    pub certificates: Vec<Vec<u8>>,
    /// The private key: a PKCS#8 `PrivateKeyInfo`, DER.
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Pkcs12 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs12")
            .field("certificates", &self.certificates.len())
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// Why a file could not be read. No variant carries bytes of the file; OIDs are shown
/// in dotted form so that the algorithm can be looked up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("not a PKCS#12 file: {0}")]
    NotPkcs12(&'static str),
    #[error("malformed PKCS#12 file: {what}: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
    #[error("wrong password: the file's integrity check (MAC) does not match")]
    WrongPassword,
    #[error("cannot decrypt the {0}: wrong password or a corrupt file")]
    Decrypt(&'static str),
    #[error("unsupported {what} (OID {oid})")]
    UnsupportedAlgorithm { what: &'static str, oid: String },
    #[error("unsupported PKCS#12 file: {0}")]
    Unsupported(&'static str),
    #[error("no private key in the file")]
    NoKey,
    #[error("more than one private key in the file")]
    MultipleKeys,
    #[error("no certificate in the file")]
    NoCertificate,
    #[error("none of the file's certificates is the private key's")]
    NoMatchingCertificate,
}

type Result<T, E = Pkcs12Error> = std::result::Result<T, E>;

/// Reads a DER PKCS#12 file with its password (`""` when it has none).
pub fn parse(file: &[u8], password: &str) -> Result<Pkcs12> {
    let pfx = read_pfx(file)?;
    let mut candidates = vec![Password::new(password)];
    if password.is_empty() {
        candidates.push(Password::absent());
    }
    match &pfx.mac {
        Some(mac) => {
            let password = candidates
                .iter()
                .find(|password| mac.verify(pfx.auth_safe, &password.bmp))
                .ok_or(Pkcs12Error::WrongPassword)?;
            read_authenticated_safe(pfx.auth_safe, password)
        }
        // Without a MAC, the password is right if the contents decrypt.
        None => {
            let mut first_error = None;
            for password in &candidates {
                match read_authenticated_safe(pfx.auth_safe, password) {
                    Ok(contents) => return Ok(contents),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            Err(first_error.unwrap_or(Pkcs12Error::WrongPassword))
        }
    }
}

/// A password in the two forms the algorithms take it.
struct Password {
    /// For the PKCS#12 KDF: BMPString (big-endian UTF-16) with a terminating NUL, or
    /// empty for "no password".
    bmp: Zeroizing<Vec<u8>>,
    /// For PBKDF2: the UTF-8 bytes.
    utf8: Zeroizing<Vec<u8>>,
}

impl Password {
    fn new(password: &str) -> Self {
        let mut bmp = Zeroizing::new(Vec::with_capacity(password.len() * 4 + 2));
        for unit in password.encode_utf16() {
            bmp.extend_from_slice(&unit.to_be_bytes());
        }
        bmp.extend_from_slice(&[0, 0]);
        Self {
            bmp,
            utf8: Zeroizing::new(password.as_bytes().to_vec()),
        }
    }

    fn absent() -> Self {
        Self {
            bmp: Zeroizing::new(Vec::new()),
            utf8: Zeroizing::new(Vec::new()),
        }
    }
}

// ---------------------------------------------------------------------------------
// DER

const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// `[0] EXPLICIT` (constructed, context-specific 0).
const EXPLICIT_0: u8 = 0xa0;
/// `[1] EXPLICIT`.
const EXPLICIT_1: u8 = 0xa1;
/// `[0] IMPLICIT OCTET STRING` (primitive, context-specific 0).
const IMPLICIT_0: u8 = 0x80;
/// The bit that marks a constructed encoding.
const CONSTRUCTED: u8 = 0x20;

/// A cursor over a run of DER elements.
#[derive(Clone, Copy)]
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element's tag and value.
    fn read_any(&mut self, what: &'static str) -> Result<(u8, &'a [u8])> {
        let bad = |why| Pkcs12Error::Malformed { what, why };
        let (&tag, rest) = self.rest.split_first().ok_or(bad("missing"))?;
        if tag & 0x1f == 0x1f {
            return Err(bad("multi-byte tags are not used by PKCS#12"));
        }
        let (&first, rest) = rest.split_first().ok_or(bad("truncated"))?;
        let (len, rest) = match first {
            0..0x80 => (usize::from(first), rest),
            0x80 => return Err(bad("indefinite length (BER, not DER)")),
            _ => {
                let count = usize::from(first & 0x7f);
                if count > 4 {
                    return Err(bad("length too large"));
                }
                let (bytes, rest) = rest.split_at_checked(count).ok_or(bad("truncated"))?;
                let len = bytes
                    .iter()
                    .fold(0usize, |len, &byte| (len << 8) | usize::from(byte));
                (len, rest)
            }
        };
        let (value, rest) = rest
            .split_at_checked(len)
            .ok_or(bad("length past the end of the data (truncated?)"))?;
        self.rest = rest;
        Ok((tag, value))
    }

    /// The value of the next element, which must have this tag.
    fn read(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8]> {
        match self.read_any(what)? {
            (found, value) if found == tag => Ok(value),
            (found, _) if found == tag | CONSTRUCTED => Err(Pkcs12Error::Malformed {
                what,
                why: "constructed string (BER, not DER)",
            }),
            _ => Err(Pkcs12Error::Malformed {
                what,
                why: "unexpected element",
            }),
        }
    }

    /// The value of the next element if it has this tag.
    fn read_optional(&mut self, tag: u8, what: &'static str) -> Result<Option<&'a [u8]>> {
        if self.peek_tag() == Some(tag) {
            self.read(tag, what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The contents of the next element, which must be a SEQUENCE.
    fn sequence(&mut self, what: &'static str) -> Result<Der<'a>> {
        self.read(SEQUENCE, what).map(Der::new)
    }

    fn uint(&mut self, what: &'static str) -> Result<u64> {
        let value = self.read(INTEGER, what)?;
        uint(value, what)
    }

    /// Fails if anything follows the elements read.
    fn finish(&self, what: &'static str) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Pkcs12Error::Malformed {
                what,
                why: "unexpected data after its end",
            })
        }
    }
}

/// The value of a non-negative DER INTEGER that fits in 64 bits.
fn uint(value: &[u8], what: &'static str) -> Result<u64> {
    let bad = |why| Pkcs12Error::Malformed { what, why };
    let magnitude = match value {
        [] => return Err(bad("empty integer")),
        [first, ..] if first & 0x80 != 0 => return Err(bad("negative integer")),
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => value,
    };
    if magnitude.len() > 8 {
        return Err(bad("integer too large"));
    }
    Ok(magnitude
        .iter()
        .fold(0u64, |n, &byte| (n << 8) | u64::from(byte)))
}

/// Exactly one DER element with this tag, and nothing after it.
fn single(data: &[u8], tag: u8, what: &'static str) -> Result<()> {
    let mut der = Der::new(data);
    der.read(tag, what)?;
    der.finish(what)
}

/// An AlgorithmIdentifier: its OID, and a cursor over its parameters.
fn algorithm<'a>(der: &mut Der<'a>, what: &'static str) -> Result<(&'a [u8], Der<'a>)> {
    let mut sequence = der.sequence(what)?;
    let oid = sequence.read(OID, what)?;
    Ok((oid, sequence))
}

/// Parameters that must be absent or NULL.
fn no_parameters(mut parameters: Der<'_>, what: &'static str) -> Result<()> {
    if let Some(null) = parameters.read_optional(NULL, what)?
        && !null.is_empty()
    {
        return Err(Pkcs12Error::Malformed {
            what,
            why: "NULL with contents",
        });
    }
    parameters.finish(what)
}

/// The dotted form of an encoded OID, for messages.
fn oid_string(oid: &[u8]) -> String {
    const MALFORMED: &str = "(malformed)";
    if oid.is_empty() || oid.len() > 64 || oid.last().is_some_and(|b| b & 0x80 != 0) {
        return MALFORMED.to_owned();
    }
    let mut arcs = Vec::new();
    let mut arc: u64 = 0;
    for &byte in oid {
        if arc > u64::MAX >> 7 {
            return MALFORMED.to_owned();
        }
        arc = (arc << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
        }
    }
    let Some((&first, rest)) = arcs.split_first() else {
        return MALFORMED.to_owned();
    };
    let (a, b) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut text = format!("{a}.{b}");
    for arc in rest {
        text.push_str(&format!(".{arc}"));
    }
    text
}

fn unsupported(what: &'static str, oid: &[u8]) -> Pkcs12Error {
    Pkcs12Error::UnsupportedAlgorithm {
        what,
        oid: oid_string(oid),
    }
}

/// The OIDs this reader knows, DER-encoded (the tests check them against their dotted
/// forms).
mod oid {
    /// 1.2.840.113549.1.7.1
    pub const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    /// 1.2.840.113549.1.7.2
    pub const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    /// 1.2.840.113549.1.7.3
    pub const ENVELOPED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03];
    /// 1.2.840.113549.1.7.6
    pub const ENCRYPTED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];

    /// 1.2.840.113549.1.12.10.1.1
    pub const KEY_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x01,
    ];
    /// 1.2.840.113549.1.12.10.1.2
    pub const SHROUDED_KEY_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
    ];
    /// 1.2.840.113549.1.12.10.1.3
    pub const CERT_BAG: &[u8] = &[
        0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x03,
    ];
    /// 1.2.840.113549.1.9.22.1
    pub const X509_CERTIFICATE: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x16, 0x01];

    /// 1.2.840.113549.1.12.1.3
    pub const PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
    /// 1.2.840.113549.1.12.1.4
    pub const PBE_SHA1_2DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x04];
    /// 1.2.840.113549.1.12.1.5
    pub const PBE_SHA1_RC2_128: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x05];
    /// 1.2.840.113549.1.12.1.6
    pub const PBE_SHA1_RC2_40: &[u8] =
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x06];

    /// 1.2.840.113549.1.5.12
    pub const PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
    /// 1.2.840.113549.1.5.13
    pub const PBES2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d];
    /// 1.2.840.113549.1.5.14
    pub const PBMAC1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0e];

    /// 1.2.840.113549.2.7
    pub const HMAC_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x07];
    /// 1.2.840.113549.2.9
    pub const HMAC_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x09];
    /// 1.2.840.113549.2.10
    pub const HMAC_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0a];
    /// 1.2.840.113549.2.11
    pub const HMAC_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x0b];

    /// 2.16.840.1.101.3.4.1.2
    pub const AES_128_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02];
    /// 2.16.840.1.101.3.4.1.22
    pub const AES_192_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x16];
    /// 2.16.840.1.101.3.4.1.42
    pub const AES_256_CBC: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a];
    /// 1.2.840.113549.3.7
    pub const DES_EDE3_CBC: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x03, 0x07];

    /// 1.3.14.3.2.26
    pub const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
    /// 2.16.840.1.101.3.4.2.1
    pub const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
    /// 2.16.840.1.101.3.4.2.2
    pub const SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
    /// 2.16.840.1.101.3.4.2.3
    pub const SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

    /// 1.2.840.113549.1.1.1
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    /// 1.2.840.10045.2.1
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
}

// ---------------------------------------------------------------------------------
// PFX and MAC

struct Pfx<'a> {
    /// The authenticated safe: the DER of the `AuthenticatedSafe` the MAC covers.
    auth_safe: &'a [u8],
    mac: Option<MacData<'a>>,
}

fn read_pfx(file: &[u8]) -> Result<Pfx<'_>> {
    if file.first() != Some(&SEQUENCE) {
        return Err(Pkcs12Error::NotPkcs12(
            "it does not start with a DER SEQUENCE",
        ));
    }
    let mut outer = Der::new(file);
    let mut pfx = outer.sequence("PFX")?;
    outer.finish("PFX")?;
    let version = pfx
        .uint("PFX version")
        .map_err(|_| Pkcs12Error::NotPkcs12("no version number where PKCS#12 has one"))?;
    if version != 3 {
        return Err(Pkcs12Error::Unsupported("PFX version other than 3"));
    }
    let mut content_info = pfx
        .sequence("authSafe")
        .map_err(|_| Pkcs12Error::NotPkcs12("no ContentInfo where PKCS#12 has one"))?;
    let content_type = content_info
        .read(OID, "authSafe content type")
        .map_err(|_| Pkcs12Error::NotPkcs12("no ContentInfo where PKCS#12 has one"))?;
    match content_type {
        oid::DATA => {}
        oid::SIGNED_DATA => {
            return Err(unsupported(
                "integrity mode: public-key signature (signedData)",
                content_type,
            ));
        }
        _ => return Err(unsupported("authSafe content type", content_type)),
    }
    let auth_safe = explicit_octets(&mut content_info, "authSafe content")?;
    content_info.finish("authSafe")?;
    let mac = match pfx.read_optional(SEQUENCE, "macData")? {
        Some(mac) => Some(MacData::read(Der::new(mac))?),
        None => None,
    };
    pfx.finish("PFX")?;
    Ok(Pfx { auth_safe, mac })
}

/// `[0] EXPLICIT OCTET STRING`: the octets.
fn explicit_octets<'a>(der: &mut Der<'a>, what: &'static str) -> Result<&'a [u8]> {
    let mut explicit = Der::new(der.read(EXPLICIT_0, what)?);
    let octets = explicit.read(OCTET_STRING, what)?;
    explicit.finish(what)?;
    Ok(octets)
}

struct MacData<'a> {
    hash: &'static digest::Algorithm,
    hmac: hmac::Algorithm,
    mac: &'a [u8],
    salt: &'a [u8],
    iterations: NonZeroU32,
}

impl<'a> MacData<'a> {
    fn read(mut der: Der<'a>) -> Result<Self> {
        let mut digest_info = der.sequence("MAC")?;
        let (algorithm, parameters) = algorithm(&mut digest_info, "MAC algorithm")?;
        let (hash, hmac) = match algorithm {
            oid::SHA1 => (
                &digest::SHA1_FOR_LEGACY_USE_ONLY,
                hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            ),
            oid::SHA256 => (&digest::SHA256, hmac::HMAC_SHA256),
            oid::SHA384 => (&digest::SHA384, hmac::HMAC_SHA384),
            oid::SHA512 => (&digest::SHA512, hmac::HMAC_SHA512),
            oid::PBMAC1 => {
                return Err(unsupported("MAC algorithm PBMAC1 (RFC 9579)", algorithm));
            }
            _ => return Err(unsupported("MAC algorithm", algorithm)),
        };
        no_parameters(parameters, "MAC algorithm parameters")?;
        let mac = digest_info.read(OCTET_STRING, "MAC value")?;
        digest_info.finish("MAC")?;
        if mac.len() != hash.output_len() {
            return Err(Pkcs12Error::Malformed {
                what: "MAC value",
                why: "wrong length for its algorithm",
            });
        }
        let salt = der.read(OCTET_STRING, "MAC salt")?;
        let iterations = match der.read_optional(INTEGER, "MAC iterations")? {
            Some(value) => iterations(uint(value, "MAC iterations")?, "MAC iterations")?,
            None => NonZeroU32::MIN,
        };
        der.finish("macData")?;
        Ok(Self {
            hash,
            hmac,
            mac,
            salt,
            iterations,
        })
    }

    /// Whether the MAC over `data` matches with this password (BMPString form).
    fn verify(&self, data: &[u8], password: &[u8]) -> bool {
        let key = pkcs12_kdf(
            self.hash,
            password,
            self.salt,
            KdfPurpose::Mac,
            self.hash.output_len(),
            self.iterations,
        );
        hmac::verify(&hmac::Key::new(self.hmac, &key), data, self.mac).is_ok()
    }
}

fn iterations(count: u64, what: &'static str) -> Result<NonZeroU32> {
    let count = u32::try_from(count)
        .ok()
        .filter(|&count| count <= MAX_ITERATIONS)
        .ok_or(Pkcs12Error::Unsupported(
            "an iteration count above 10,000,000",
        ))?;
    NonZeroU32::new(count).ok_or(Pkcs12Error::Malformed {
        what,
        why: "zero iterations",
    })
}

/// The ID byte of RFC 7292 appendix B.3: what the derived bytes are for.
#[derive(Clone, Copy)]
enum KdfPurpose {
    Key = 1,
    Iv = 2,
    Mac = 3,
}

/// The PKCS#12 key-derivation function (RFC 7292 appendix B.2): `n` bytes from a
/// BMPString password and a salt, over the hash `hash`.
fn pkcs12_kdf(
    hash: &'static digest::Algorithm,
    password: &[u8],
    salt: &[u8],
    purpose: KdfPurpose,
    n: usize,
    iterations: NonZeroU32,
) -> Zeroizing<Vec<u8>> {
    let v = hash.block_len();
    // D: v bytes of the ID; I: the salt, then the password, each repeated to a
    // multiple of v bytes.
    let d = vec![purpose as u8; v];
    let salt_len = v * salt.len().div_ceil(v);
    let password_len = v * password.len().div_ceil(v);
    let mut i = Zeroizing::new(Vec::with_capacity(salt_len + password_len));
    i.extend(salt.iter().cycle().take(salt_len));
    i.extend(password.iter().cycle().take(password_len));

    let mut out = Zeroizing::new(Vec::with_capacity(n + hash.output_len()));
    let mut b: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(v));
    loop {
        let mut context = digest::Context::new(hash);
        context.update(&d);
        context.update(&i);
        let mut a = Zeroizing::new(context.finish().as_ref().to_vec());
        for _ in 1..iterations.get() {
            let next = digest::digest(hash, &a);
            a.clear();
            a.extend_from_slice(next.as_ref());
        }
        let wanted = n.saturating_sub(out.len());
        out.extend(a.iter().take(wanted));
        if out.len() >= n {
            return out;
        }
        // I_j = (I_j + B + 1) mod 2^(8v) for each v-byte block I_j, B = A repeated to
        // v bytes.
        b.clear();
        b.extend(a.iter().cycle().take(v));
        for block in i.chunks_exact_mut(v) {
            let mut carry = 1u16;
            for (x, y) in block.iter_mut().rev().zip(b.iter().rev()) {
                let [low, high] = (u16::from(*x) + u16::from(*y) + carry).to_le_bytes();
                *x = low;
                carry = u16::from(high);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Contents

#[derive(Default)]
struct Bags {
    keys: Vec<Zeroizing<Vec<u8>>>,
    certificates: Vec<Vec<u8>>,
}

/// The `AuthenticatedSafe`: a SEQUENCE OF ContentInfo, each plain or encrypted
/// `SafeContents`.
fn read_authenticated_safe(auth_safe: &[u8], password: &Password) -> Result<Pkcs12> {
    let mut outer = Der::new(auth_safe);
    let mut list = outer.sequence("AuthenticatedSafe")?;
    outer.finish("AuthenticatedSafe")?;
    let mut bags = Bags::default();
    while !list.is_empty() {
        let mut content_info = list.sequence("ContentInfo")?;
        let content_type = content_info.read(OID, "ContentInfo type")?;
        match content_type {
            oid::DATA => {
                let safe_contents = explicit_octets(&mut content_info, "ContentInfo data")?;
                read_safe_contents(safe_contents, password, &mut bags)?;
            }
            oid::ENCRYPTED_DATA => {
                let mut explicit = Der::new(content_info.read(EXPLICIT_0, "encryptedData")?);
                let encrypted_data = explicit.sequence("encryptedData")?;
                explicit.finish("encryptedData")?;
                let safe_contents = decrypt_encrypted_data(encrypted_data, password)?;
                read_safe_contents(&safe_contents, password, &mut bags)?;
            }
            oid::ENVELOPED_DATA => {
                return Err(unsupported(
                    "privacy mode: public-key encryption (envelopedData)",
                    content_type,
                ));
            }
            _ => return Err(unsupported("ContentInfo type", content_type)),
        }
        content_info.finish("ContentInfo")?;
    }

    let key = match bags.keys.len() {
        0 => return Err(Pkcs12Error::NoKey),
        1 => bags.keys.pop().ok_or(Pkcs12Error::NoKey)?,
        _ => return Err(Pkcs12Error::MultipleKeys),
    };
    let mut certificates = bags.certificates;
    if certificates.is_empty() {
        return Err(Pkcs12Error::NoCertificate);
    }
    leaf_first(&mut certificates, &key)?;
    Ok(Pkcs12 { certificates, key })
}

/// `EncryptedData` (version, `EncryptedContentInfo`, optional unprotected attributes):
/// the decrypted `SafeContents`.
fn decrypt_encrypted_data(mut der: Der<'_>, password: &Password) -> Result<Zeroizing<Vec<u8>>> {
    let version = der.uint("encryptedData version")?;
    if version != 0 && version != 2 {
        return Err(Pkcs12Error::Unsupported(
            "encryptedData version other than 0 or 2",
        ));
    }
    let mut info = der.sequence("EncryptedContentInfo")?;
    let content_type = info.read(OID, "EncryptedContentInfo type")?;
    if content_type != oid::DATA {
        return Err(unsupported("encrypted content type", content_type));
    }
    let (algorithm, parameters) = algorithm(&mut info, "content encryption algorithm")?;
    let ciphertext = info.read(IMPLICIT_0, "encrypted content")?;
    info.finish("EncryptedContentInfo")?;
    // unprotectedAttrs [1] IMPLICIT: nothing kvrun needs.
    der.read_optional(EXPLICIT_1, "unprotected attributes")?;
    der.finish("encryptedData")?;
    let plaintext = decrypt(
        algorithm,
        parameters,
        ciphertext,
        password,
        "certificates (encryptedData)",
    )?;
    // A wrong password (in a file without MAC) gives random bytes, not a SEQUENCE.
    single(&plaintext, SEQUENCE, "SafeContents")
        .map_err(|_| Pkcs12Error::Decrypt("certificates (encryptedData)"))?;
    Ok(plaintext)
}

/// A `SafeContents` (SEQUENCE OF SafeBag): its keys and certificates go into `bags`.
fn read_safe_contents(der: &[u8], password: &Password, bags: &mut Bags) -> Result<()> {
    let mut outer = Der::new(der);
    let mut list = outer.sequence("SafeContents")?;
    outer.finish("SafeContents")?;
    while !list.is_empty() {
        let mut bag = list.sequence("SafeBag")?;
        let bag_type = bag.read(OID, "SafeBag type")?;
        let value = bag.read(EXPLICIT_0, "SafeBag value")?;
        // bagAttributes (friendly name, local key id): not needed.
        bag.read_optional(SET, "SafeBag attributes")?;
        bag.finish("SafeBag")?;
        match bag_type {
            oid::KEY_BAG => {
                single(value, SEQUENCE, "keyBag")?;
                bags.keys.push(Zeroizing::new(value.to_vec()));
            }
            oid::SHROUDED_KEY_BAG => {
                let mut outer = Der::new(value);
                let mut encrypted = outer.sequence("EncryptedPrivateKeyInfo")?;
                outer.finish("EncryptedPrivateKeyInfo")?;
                let (algorithm, parameters) =
                    algorithm(&mut encrypted, "key encryption algorithm")?;
                let ciphertext = encrypted.read(OCTET_STRING, "encrypted key")?;
                encrypted.finish("EncryptedPrivateKeyInfo")?;
                let key = decrypt(
                    algorithm,
                    parameters,
                    ciphertext,
                    password,
                    "private key (pkcs8ShroudedKeyBag)",
                )?;
                single(&key, SEQUENCE, "PrivateKeyInfo")
                    .map_err(|_| Pkcs12Error::Decrypt("private key (pkcs8ShroudedKeyBag)"))?;
                bags.keys.push(key);
            }
            oid::CERT_BAG => {
                let mut outer = Der::new(value);
                let mut cert_bag = outer.sequence("CertBag")?;
                outer.finish("CertBag")?;
                let cert_type = cert_bag.read(OID, "CertBag type")?;
                let certificate = explicit_octets(&mut cert_bag, "CertBag value")?;
                cert_bag.finish("CertBag")?;
                // sdsiCertificate and others: not X.509, nothing to send to Entra ID.
                if cert_type == oid::X509_CERTIFICATE {
                    single(certificate, SEQUENCE, "certificate")?;
                    bags.certificates.push(certificate.to_vec());
                }
            }
            // crlBag, secretBag, safeContentsBag and unknown bags.
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Decryption

/// Decrypts `ciphertext` with a password-based encryption scheme.
fn decrypt(
    algorithm: &[u8],
    mut parameters: Der<'_>,
    ciphertext: &[u8],
    password: &Password,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    let pbes1 = |key_len: usize, parameters: &mut Der<'_>| -> Result<_> {
        let mut pbe = parameters.sequence("PBE parameters")?;
        parameters.finish("PBE parameters")?;
        let salt = pbe.read(OCTET_STRING, "PBE salt")?;
        let count = iterations(pbe.uint("PBE iterations")?, "PBE iterations")?;
        pbe.finish("PBE parameters")?;
        let hash = &digest::SHA1_FOR_LEGACY_USE_ONLY;
        let key = pkcs12_kdf(hash, &password.bmp, salt, KdfPurpose::Key, key_len, count);
        let iv = pkcs12_kdf(hash, &password.bmp, salt, KdfPurpose::Iv, 8, count);
        Ok((key, iv))
    };
    let bad_key = || Pkcs12Error::Malformed {
        what: "encryption parameters",
        why: "key of the wrong length",
    };
    match algorithm {
        oid::PBE_SHA1_3DES => {
            let (key, iv) = pbes1(24, &mut parameters)?;
            let cipher = des::TdesEde3::new_from_slice(&key).map_err(|_| bad_key())?;
            cbc_decrypt(cipher, &iv, ciphertext, what)
        }
        oid::PBE_SHA1_2DES => {
            let (key, iv) = pbes1(16, &mut parameters)?;
            let cipher = des::TdesEde2::new_from_slice(&key).map_err(|_| bad_key())?;
            cbc_decrypt(cipher, &iv, ciphertext, what)
        }
        oid::PBE_SHA1_RC2_128 => {
            let (key, iv) = pbes1(16, &mut parameters)?;
            cbc_decrypt(
                rc2::Rc2::new_with_eff_key_len(&key, 128),
                &iv,
                ciphertext,
                what,
            )
        }
        oid::PBE_SHA1_RC2_40 => {
            let (key, iv) = pbes1(5, &mut parameters)?;
            cbc_decrypt(
                rc2::Rc2::new_with_eff_key_len(&key, 40),
                &iv,
                ciphertext,
                what,
            )
        }
        oid::PBES2 => {
            let mut pbes2 = parameters.sequence("PBES2 parameters")?;
            parameters.finish("PBES2 parameters")?;
            pbes2_decrypt(&mut pbes2, ciphertext, password, what)
        }
        _ => Err(unsupported("encryption algorithm", algorithm)),
    }
}

#[derive(Clone, Copy)]
enum Pbes2Cipher {
    Aes128,
    Aes192,
    Aes256,
    TripleDes,
}

/// PBES2 (RFC 8018 §6.2): PBKDF2, then a block cipher in CBC mode.
fn pbes2_decrypt(
    parameters: &mut Der<'_>,
    ciphertext: &[u8],
    password: &Password,
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    let (kdf, mut kdf_parameters) = algorithm(parameters, "PBES2 key derivation function")?;
    let (scheme, mut scheme_parameters) = algorithm(parameters, "PBES2 encryption scheme")?;
    parameters.finish("PBES2 parameters")?;
    if kdf != oid::PBKDF2 {
        return Err(unsupported("PBES2 key derivation function", kdf));
    }
    let (cipher, key_len) = match scheme {
        oid::AES_128_CBC => (Pbes2Cipher::Aes128, 16),
        oid::AES_192_CBC => (Pbes2Cipher::Aes192, 24),
        oid::AES_256_CBC => (Pbes2Cipher::Aes256, 32),
        oid::DES_EDE3_CBC => (Pbes2Cipher::TripleDes, 24),
        _ => return Err(unsupported("PBES2 encryption scheme", scheme)),
    };
    let iv = scheme_parameters.read(OCTET_STRING, "PBES2 IV")?;
    scheme_parameters.finish("PBES2 encryption scheme")?;

    let mut pbkdf2_parameters = kdf_parameters.sequence("PBKDF2 parameters")?;
    kdf_parameters.finish("PBKDF2 parameters")?;
    if pbkdf2_parameters.peek_tag() != Some(OCTET_STRING) {
        return Err(Pkcs12Error::Unsupported(
            "a PBKDF2 salt from another source than the parameters",
        ));
    }
    let salt = pbkdf2_parameters.read(OCTET_STRING, "PBKDF2 salt")?;
    let count = iterations(
        pbkdf2_parameters.uint("PBKDF2 iterations")?,
        "PBKDF2 iterations",
    )?;
    if let Some(len) = pbkdf2_parameters.read_optional(INTEGER, "PBKDF2 key length")?
        && usize::try_from(uint(len, "PBKDF2 key length")?).ok() != Some(key_len)
    {
        return Err(Pkcs12Error::Malformed {
            what: "PBKDF2 key length",
            why: "does not match the cipher",
        });
    }
    let prf = match pbkdf2_parameters.peek_tag() {
        Some(SEQUENCE) => {
            let (prf, prf_parameters) = algorithm(&mut pbkdf2_parameters, "PBKDF2 PRF")?;
            no_parameters(prf_parameters, "PBKDF2 PRF parameters")?;
            match prf {
                oid::HMAC_SHA1 => pbkdf2::PBKDF2_HMAC_SHA1,
                oid::HMAC_SHA256 => pbkdf2::PBKDF2_HMAC_SHA256,
                oid::HMAC_SHA384 => pbkdf2::PBKDF2_HMAC_SHA384,
                oid::HMAC_SHA512 => pbkdf2::PBKDF2_HMAC_SHA512,
                _ => return Err(unsupported("PBKDF2 PRF", prf)),
            }
        }
        // DEFAULT algid-hmacWithSHA1
        _ => pbkdf2::PBKDF2_HMAC_SHA1,
    };
    pbkdf2_parameters.finish("PBKDF2 parameters")?;

    let mut key = Zeroizing::new(vec![0u8; key_len]);
    pbkdf2::derive(prf, count, salt, &password.utf8, &mut key);
    let bad_key = || Pkcs12Error::Malformed {
        what: "encryption parameters",
        why: "key of the wrong length",
    };
    match cipher {
        Pbes2Cipher::Aes128 => {
            let cipher = aes::Aes128::new_from_slice(&key).map_err(|_| bad_key())?;
            cbc_decrypt(cipher, iv, ciphertext, what)
        }
        Pbes2Cipher::Aes192 => {
            let cipher = aes::Aes192::new_from_slice(&key).map_err(|_| bad_key())?;
            cbc_decrypt(cipher, iv, ciphertext, what)
        }
        Pbes2Cipher::Aes256 => {
            let cipher = aes::Aes256::new_from_slice(&key).map_err(|_| bad_key())?;
            cbc_decrypt(cipher, iv, ciphertext, what)
        }
        Pbes2Cipher::TripleDes => {
            let cipher = des::TdesEde3::new_from_slice(&key).map_err(|_| bad_key())?;
            cbc_decrypt(cipher, iv, ciphertext, what)
        }
    }
}

/// CBC decryption and PKCS#7 padding removal.
fn cbc_decrypt<C: BlockCipherDecrypt>(
    cipher: C,
    iv: &[u8],
    ciphertext: &[u8],
    what: &'static str,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut mode = cbc::Decryptor::<C>::inner_iv_slice_init(cipher, iv).map_err(|_| {
        Pkcs12Error::Malformed {
            what: "encryption parameters",
            why: "IV of the wrong length",
        }
    })?;
    let block_len = C::block_size();
    let mut buffer = Zeroizing::new(ciphertext.to_vec());
    let (blocks, tail) = Array::<u8, C::BlockSize>::slice_as_chunks_mut(&mut buffer);
    if blocks.is_empty() || !tail.is_empty() {
        return Err(Pkcs12Error::Malformed {
            what: "encrypted data",
            why: "not a whole number of cipher blocks",
        });
    }
    mode.decrypt_blocks(blocks);
    let padding = buffer.last().map_or(0, |&byte| usize::from(byte));
    let start = buffer.len().checked_sub(padding);
    let padded_well = (1..=block_len).contains(&padding)
        && start
            .and_then(|start| buffer.get(start..))
            .is_some_and(|pad| pad.iter().all(|&byte| usize::from(byte) == padding));
    match start {
        Some(start) if padded_well => {
            buffer.truncate(start);
            Ok(buffer)
        }
        _ => Err(Pkcs12Error::Decrypt(what)),
    }
}

// ---------------------------------------------------------------------------------
// Which certificate is the key's

/// A public key in a form both a private key and a certificate can give.
#[derive(PartialEq, Eq)]
enum PublicKey<'a> {
    /// RSA: the modulus and the public exponent, as DER INTEGER contents.
    Rsa { n: &'a [u8], e: &'a [u8] },
    /// EC: the point, as BIT STRING contents.
    Ec(&'a [u8]),
}

/// The public key of a PKCS#8 `PrivateKeyInfo`, when it can be known without
/// arithmetic: RSA keys, and EC keys that carry their public point.
fn private_key_public(pkcs8: &[u8]) -> Option<PublicKey<'_>> {
    let mut info = Der::new(pkcs8).sequence("PrivateKeyInfo").ok()?;
    info.uint("version").ok()?;
    let (algorithm, _) = algorithm(&mut info, "key algorithm").ok()?;
    let private_key = info.read(OCTET_STRING, "private key").ok()?;
    let mut key = Der::new(private_key).sequence("private key").ok()?;
    match algorithm {
        oid::RSA_ENCRYPTION => {
            key.uint("version").ok()?;
            let n = key.read(INTEGER, "modulus").ok()?;
            let e = key.read(INTEGER, "exponent").ok()?;
            Some(PublicKey::Rsa { n, e })
        }
        oid::EC_PUBLIC_KEY => {
            key.uint("version").ok()?;
            key.read(OCTET_STRING, "private key").ok()?;
            key.read_optional(EXPLICIT_0, "parameters").ok()?;
            let public = Der::new(key.read(EXPLICIT_1, "public key").ok()?)
                .read(BIT_STRING, "public key")
                .ok()?;
            Some(PublicKey::Ec(public))
        }
        _ => None,
    }
}

/// The public key of an X.509 certificate, for the same algorithms.
fn certificate_public(certificate: &[u8]) -> Option<PublicKey<'_>> {
    let mut tbs = Der::new(certificate)
        .sequence("certificate")
        .ok()?
        .sequence("tbsCertificate")
        .ok()?;
    tbs.read_optional(EXPLICIT_0, "version").ok()?;
    tbs.read(INTEGER, "serial number").ok()?;
    for what in ["signature", "issuer", "validity", "subject"] {
        tbs.sequence(what).ok()?;
    }
    let mut spki = tbs.sequence("subjectPublicKeyInfo").ok()?;
    let (algorithm, _) = algorithm(&mut spki, "key algorithm").ok()?;
    let public = spki.read(BIT_STRING, "public key").ok()?;
    match algorithm {
        oid::RSA_ENCRYPTION => {
            let rsa_public_key = public.strip_prefix(&[0])?;
            let mut key = Der::new(rsa_public_key).sequence("RSAPublicKey").ok()?;
            let n = key.read(INTEGER, "modulus").ok()?;
            let e = key.read(INTEGER, "exponent").ok()?;
            Some(PublicKey::Rsa { n, e })
        }
        oid::EC_PUBLIC_KEY => Some(PublicKey::Ec(public)),
        _ => None,
    }
}

/// Moves the key's own certificate to the front.
fn leaf_first(certificates: &mut [Vec<u8>], key: &[u8]) -> Result<()> {
    let Some(public) = private_key_public(key) else {
        // Other algorithms: only a lone certificate is unambiguous.
        return if certificates.len() == 1 {
            Ok(())
        } else {
            Err(Pkcs12Error::Unsupported(
                "several certificates with a key whose certificate cannot be told \
                 (neither RSA nor EC with its public key)",
            ))
        };
    };
    let position = certificates
        .iter()
        .position(|certificate| certificate_public(certificate).as_ref() == Some(&public))
        .ok_or(Pkcs12Error::NoMatchingCertificate)?;
    if let Some(head) = certificates.get_mut(..=position) {
        head.rotate_right(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;

    use ring::signature::{KeyPair as _, RsaKeyPair};

    /// A key and certificate made by `openssl`, as DER.
    struct Identity {
        certificate: Vec<u8>,
        /// PKCS#8, as `openssl pkcs8 -topk8 -nocrypt -outform DER` writes it.
        key: Vec<u8>,
    }

    /// One `openssl pkcs12 -export` of the table.
    struct Export {
        name: &'static str,
        args: &'static [&'static str],
        password: &'static str,
        chain: bool,
    }

    const EXPORTS: &[Export] = &[
        Export {
            name: "default (OpenSSL 3: PBES2 AES-256-CBC, PBKDF2-SHA256, MAC SHA-256)",
            args: &[],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "-legacy (3DES key, RC2-40 certificates, MAC SHA-1)",
            args: &["-legacy"],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "3DES key and certificates, MAC SHA-1",
            args: &[
                "-keypbe",
                "PBE-SHA1-3DES",
                "-certpbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
            ],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "unencrypted bags",
            args: &["-keypbe", "NONE", "-certpbe", "NONE"],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "empty password",
            args: &[],
            password: "",
            chain: false,
        },
        Export {
            name: "empty password, -legacy",
            args: &["-legacy"],
            password: "",
            chain: false,
        },
        Export {
            name: "chain: CA-signed leaf with its CA",
            args: &[],
            password: "correct horse",
            chain: true,
        },
        Export {
            name: "chain, -legacy",
            args: &["-legacy"],
            password: "correct horse",
            chain: true,
        },
        Export {
            name: "2-key 3DES key, RC2-128 certificates (-legacy)",
            args: &[
                "-legacy",
                "-keypbe",
                "PBE-SHA1-2DES",
                "-certpbe",
                "PBE-SHA1-RC2-128",
            ],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "PBES2 AES-128-CBC, MAC SHA-512",
            args: &[
                "-keypbe",
                "AES-128-CBC",
                "-certpbe",
                "AES-128-CBC",
                "-macalg",
                "sha512",
            ],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "PBES2 AES-192-CBC and DES-EDE3-CBC, MAC SHA-384",
            args: &[
                "-keypbe",
                "AES-192-CBC",
                "-certpbe",
                "DES-EDE3-CBC",
                "-macalg",
                "sha384",
            ],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "no MAC",
            args: &["-nomac"],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "no MAC, -legacy",
            args: &["-nomac", "-legacy"],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "one iteration (-noiter -nomaciter)",
            args: &["-noiter", "-nomaciter"],
            password: "correct horse",
            chain: false,
        },
        Export {
            name: "non-ASCII password",
            args: &[],
            password: "pässwörd ✓ 𝄞",
            chain: false,
        },
        Export {
            name: "non-ASCII password, -legacy",
            args: &["-legacy"],
            password: "pässwörd ✓ 𝄞",
            chain: false,
        },
    ];

    struct Fixtures {
        self_signed: Identity,
        leaf: Identity,
        ca: Identity,
        /// The files of [`EXPORTS`], in order.
        files: Vec<Vec<u8>>,
        /// A file without MAC and without encryption: every byte is parsed.
        plain: Vec<u8>,
    }

    fn openssl(dir: &Path, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command makes the PKCS#12 test files: install it");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn read(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(name)).unwrap()
    }

    fn identity(dir: &Path, name: &str) -> Identity {
        openssl(
            dir,
            &[
                "x509",
                "-in",
                &format!("{name}.pem"),
                "-outform",
                "DER",
                "-out",
                &format!("{name}.der"),
            ],
        );
        openssl(
            dir,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                &format!("{name}.key"),
                "-outform",
                "DER",
                "-out",
                &format!("{name}.key.der"),
            ],
        );
        Identity {
            certificate: read(dir, &format!("{name}.der")),
            key: read(dir, &format!("{name}.key.der")),
        }
    }

    fn export(dir: &Path, out: &str, chain: bool, password: &str, args: &[&str]) -> Vec<u8> {
        let passout = format!("pass:{password}");
        let mut all = vec!["pkcs12", "-export", "-out", out, "-passout", &passout];
        if chain {
            all.extend([
                "-in",
                "leaf.pem",
                "-inkey",
                "leaf.key",
                "-certfile",
                "ca.pem",
            ]);
        } else {
            all.extend(["-in", "self.pem", "-inkey", "self.key"]);
        }
        all.extend(args);
        openssl(dir, &all);
        read(dir, out)
    }

    fn make_fixtures() -> Fixtures {
        let dir: PathBuf =
            std::env::temp_dir().join(format!("kvrun-pkcs12-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let new_self_signed = |name: &str, cn: &str| {
            let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
            openssl(
                &dir,
                &[
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
                    "-subj", cn, "-days", "2",
                ],
            );
        };
        new_self_signed("self", "/CN=kvrun-test");
        new_self_signed("ca", "/CN=kvrun-test-ca");
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
                "-subj",
                "/CN=kvrun-test-leaf",
            ],
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "2",
                "-days",
                "2",
                "-out",
                "leaf.pem",
            ],
        );
        let fixtures = Fixtures {
            self_signed: identity(&dir, "self"),
            leaf: identity(&dir, "leaf"),
            ca: identity(&dir, "ca"),
            files: EXPORTS
                .iter()
                .enumerate()
                .map(|(i, e)| export(&dir, &format!("{i}.p12"), e.chain, e.password, e.args))
                .collect(),
            plain: export(
                &dir,
                "plain.p12",
                true,
                "pw",
                &["-nomac", "-keypbe", "NONE", "-certpbe", "NONE"],
            ),
        };
        std::fs::remove_dir_all(&dir).unwrap();
        fixtures
    }

    fn fixtures() -> &'static Fixtures {
        static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
        FIXTURES.get_or_init(make_fixtures)
    }

    #[test]
    fn reads_what_openssl_writes() {
        let fixtures = fixtures();
        for (export, file) in EXPORTS.iter().zip(&fixtures.files) {
            let name = export.name;
            let p12 = parse(file, export.password).unwrap_or_else(|e| panic!("{name}: {e}"));
            let (identity, expected_certificates) = if export.chain {
                (
                    &fixtures.leaf,
                    vec![
                        fixtures.leaf.certificate.clone(),
                        fixtures.ca.certificate.clone(),
                    ],
                )
            } else {
                (
                    &fixtures.self_signed,
                    vec![fixtures.self_signed.certificate.clone()],
                )
            };
            assert!(
                p12.certificates == expected_certificates,
                "{name}: certificates"
            );
            assert!(*p12.key == identity.key, "{name}: key");
            let key = RsaKeyPair::from_pkcs8(&p12.key).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(
                key.public_key().modulus_len() == 256,
                "{name}: RSA-2048 expected"
            );
        }
    }

    #[test]
    fn wrong_password() {
        let fixtures = fixtures();
        for (export, file) in EXPORTS.iter().zip(&fixtures.files) {
            let name = export.name;
            let wrong = if export.password.is_empty() {
                "not empty"
            } else {
                ""
            };
            let err = parse(file, wrong).unwrap_err();
            if export.args.contains(&"-nomac") {
                assert!(matches!(err, Pkcs12Error::Decrypt(_)), "{name}: {err}");
            } else {
                assert_eq!(err, Pkcs12Error::WrongPassword, "{name}");
            }
            let err = parse(file, "Correct horse").unwrap_err();
            assert!(
                matches!(err, Pkcs12Error::WrongPassword | Pkcs12Error::Decrypt(_)),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn the_key_s_certificate_comes_first() {
        let fixtures = fixtures();
        let mut certificates = vec![
            fixtures.ca.certificate.clone(),
            fixtures.self_signed.certificate.clone(),
            fixtures.leaf.certificate.clone(),
        ];
        leaf_first(&mut certificates, &fixtures.leaf.key).unwrap();
        assert_eq!(
            certificates,
            [
                fixtures.leaf.certificate.clone(),
                fixtures.ca.certificate.clone(),
                fixtures.self_signed.certificate.clone(),
            ]
        );
        let mut others = vec![fixtures.ca.certificate.clone()];
        assert_eq!(
            leaf_first(&mut others, &fixtures.leaf.key),
            Err(Pkcs12Error::NoMatchingCertificate)
        );
    }

    #[test]
    fn truncated_files_are_errors() {
        let fixtures = fixtures();
        for file in [&fixtures.files[0], &fixtures.plain] {
            for len in 0..file.len() {
                let err = parse(&file[..len], "correct horse").unwrap_err();
                assert!(
                    matches!(
                        err,
                        Pkcs12Error::NotPkcs12(_) | Pkcs12Error::Malformed { .. }
                    ),
                    "{len}: {err}"
                );
            }
            let mut longer = file.clone();
            longer.push(0);
            assert!(matches!(
                parse(&longer, "correct horse"),
                Err(Pkcs12Error::Malformed {
                    why: "unexpected data after its end",
                    ..
                })
            ));
        }
    }

    /// An EC key is read, and matched to its certificate by the public point it
    /// carries; the service principal then refuses it, as Entra ID needs RSA.
    #[test]
    fn ec_keys() {
        let dir = std::env::temp_dir().join(format!("kvrun-pkcs12-ec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ec.key",
                "-out",
                "ec.pem",
                "-subj",
                "/CN=kvrun-test-ec",
                "-days",
                "2",
            ],
        );
        let ec = identity(&dir, "ec");
        let file = export_files(&dir, "ec.p12", &["-in", "ec.pem", "-inkey", "ec.key"]);
        std::fs::remove_dir_all(&dir).unwrap();
        let p12 = parse(&file, "pw").unwrap();
        assert!(p12.certificates == [ec.certificate.clone()]);
        assert!(*p12.key == ec.key);
        let mut certificates = vec![fixtures().ca.certificate.clone(), ec.certificate.clone()];
        leaf_first(&mut certificates, &ec.key).unwrap();
        assert!(certificates.first() == Some(&ec.certificate));
        let err = crate::credential::service_principal::Certificate::from_pkcs12(
            &file,
            Some("pw"),
            false,
        )
        .unwrap_err();
        assert!(err.contains("RSA"), "{err}");
    }

    fn export_files(dir: &Path, out: &str, inputs: &[&str]) -> Vec<u8> {
        let mut args = vec!["pkcs12", "-export", "-out", out, "-passout", "pass:pw"];
        args.extend(inputs);
        openssl(dir, &args);
        read(dir, out)
    }

    /// xorshift64*: deterministic bytes for the fuzz-style tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }
    }

    #[test]
    fn random_bytes_are_errors() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..2000 {
            let len = rng.below(300);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            // Half of them look like a DER SEQUENCE of the right length, to get past the
            // first check.
            if round % 2 == 1 && len > 4 {
                bytes[0] = 0x30;
                bytes[1] = 0x82;
                bytes[2..4].copy_from_slice(&u16::try_from(len - 4).unwrap().to_be_bytes());
            }
            let err = parse(&bytes, "").unwrap_err();
            assert!(
                matches!(
                    err,
                    Pkcs12Error::NotPkcs12(_) | Pkcs12Error::Malformed { .. }
                ),
                "{round}: {err}"
            );
        }
        for text in [
            &b""[..],
            b"-----BEGIN CERTIFICATE-----\n",
            b"hello",
            b"\x30\x80\x00\x00",
        ] {
            let err = parse(text, "").unwrap_err();
            assert!(
                matches!(
                    err,
                    Pkcs12Error::NotPkcs12(_) | Pkcs12Error::Malformed { .. }
                ),
                "{err}"
            );
        }
    }

    /// Flips bytes of valid files, everywhere in one without MAC or encryption (so the
    /// parser sees every change) and at random in the others: errors, never a panic.
    #[test]
    fn flipped_bytes_never_panic() {
        let fixtures = fixtures();
        let check = |file: &[u8], password: &str, at: usize, xor: u8| {
            let mut bad = file.to_vec();
            if let Some(byte) = bad.get_mut(at) {
                *byte ^= xor;
            }
            let outcome =
                std::panic::catch_unwind(|| parse(&bad, password).map(|p| p.certificates.len()));
            assert!(outcome.is_ok(), "panic with byte {at} ^ {xor:#04x}");
        };
        for at in 0..fixtures.plain.len() {
            for xor in [0x01, 0x80, 0xff] {
                check(&fixtures.plain, "pw", at, xor);
            }
        }
        let mut rng = Rng(42);
        for (export, file) in EXPORTS.iter().zip(&fixtures.files) {
            // The no-MAC ones reach the decryption and the decrypted contents.
            let rounds = if export.args.contains(&"-nomac") {
                300
            } else {
                40
            };
            for _ in 0..rounds {
                let xor = rng.byte() | 1;
                check(file, export.password, rng.below(file.len()), xor);
            }
        }
    }

    #[test]
    fn der_reader() {
        for (input, expected) in [
            (&[0x04, 0x02, 0xaa, 0xbb][..], Ok((0x04, &[0xaa, 0xbb][..]))),
            (&[0x04, 0x81, 0x01, 0xaa], Ok((0x04, &[0xaa][..]))),
            (&[0x04, 0x00], Ok((0x04, &[][..]))),
            (
                &[0x30, 0x80, 0x00, 0x00],
                Err("indefinite length (BER, not DER)"),
            ),
            (
                &[0x04, 0x03, 0xaa],
                Err("length past the end of the data (truncated?)"),
            ),
            (&[0x04, 0x85, 1, 0, 0, 0, 0], Err("length too large")),
            (&[0x04, 0xff], Err("length too large")),
            (&[0x04, 0x82, 0x01], Err("truncated")),
            (&[0x04], Err("truncated")),
            (&[], Err("missing")),
            (
                &[0x1f, 0x81, 0x00, 0x00],
                Err("multi-byte tags are not used by PKCS#12"),
            ),
        ] {
            let got = Der::new(input).read_any("test").map_err(|e| match e {
                Pkcs12Error::Malformed { why, .. } => why,
                other => panic!("{other}"),
            });
            assert_eq!(got, expected, "{input:02x?}");
        }
        let mut der = Der::new(&[0x04, 0x00, 0x05, 0x00]);
        der.read(OCTET_STRING, "test").unwrap();
        assert!(der.finish("test").is_err());
        assert!(matches!(
            Der::new(&[0x24, 0x00]).read(OCTET_STRING, "test"),
            Err(Pkcs12Error::Malformed {
                why: "constructed string (BER, not DER)",
                ..
            })
        ));
        for (value, expected) in [
            (&[0x03][..], Ok(3)),
            (&[0x00, 0x80], Ok(128)),
            (&[0x00], Ok(0)),
            (&[0x80], Err("negative integer")),
            (&[], Err("empty integer")),
            (&[1, 0, 0, 0, 0, 0, 0, 0, 0], Err("integer too large")),
        ] {
            let got = uint(value, "test").map_err(|e| match e {
                Pkcs12Error::Malformed { why, .. } => why,
                other => panic!("{other}"),
            });
            assert_eq!(got, expected, "{value:02x?}");
        }
        assert!(iterations(0, "test").is_err());
        assert!(iterations(u64::from(MAX_ITERATIONS) + 1, "test").is_err());
    }

    #[test]
    fn oids() {
        for (encoded, dotted) in [
            (oid::DATA, "1.2.840.113549.1.7.1"),
            (oid::SIGNED_DATA, "1.2.840.113549.1.7.2"),
            (oid::ENVELOPED_DATA, "1.2.840.113549.1.7.3"),
            (oid::ENCRYPTED_DATA, "1.2.840.113549.1.7.6"),
            (oid::KEY_BAG, "1.2.840.113549.1.12.10.1.1"),
            (oid::SHROUDED_KEY_BAG, "1.2.840.113549.1.12.10.1.2"),
            (oid::CERT_BAG, "1.2.840.113549.1.12.10.1.3"),
            (oid::X509_CERTIFICATE, "1.2.840.113549.1.9.22.1"),
            (oid::PBE_SHA1_3DES, "1.2.840.113549.1.12.1.3"),
            (oid::PBE_SHA1_2DES, "1.2.840.113549.1.12.1.4"),
            (oid::PBE_SHA1_RC2_128, "1.2.840.113549.1.12.1.5"),
            (oid::PBE_SHA1_RC2_40, "1.2.840.113549.1.12.1.6"),
            (oid::PBKDF2, "1.2.840.113549.1.5.12"),
            (oid::PBES2, "1.2.840.113549.1.5.13"),
            (oid::PBMAC1, "1.2.840.113549.1.5.14"),
            (oid::HMAC_SHA1, "1.2.840.113549.2.7"),
            (oid::HMAC_SHA256, "1.2.840.113549.2.9"),
            (oid::HMAC_SHA384, "1.2.840.113549.2.10"),
            (oid::HMAC_SHA512, "1.2.840.113549.2.11"),
            (oid::AES_128_CBC, "2.16.840.1.101.3.4.1.2"),
            (oid::AES_192_CBC, "2.16.840.1.101.3.4.1.22"),
            (oid::AES_256_CBC, "2.16.840.1.101.3.4.1.42"),
            (oid::DES_EDE3_CBC, "1.2.840.113549.3.7"),
            (oid::SHA1, "1.3.14.3.2.26"),
            (oid::SHA256, "2.16.840.1.101.3.4.2.1"),
            (oid::SHA384, "2.16.840.1.101.3.4.2.2"),
            (oid::SHA512, "2.16.840.1.101.3.4.2.3"),
            (oid::RSA_ENCRYPTION, "1.2.840.113549.1.1.1"),
            (oid::EC_PUBLIC_KEY, "1.2.840.10045.2.1"),
            (&[0x2a, 0x86], "(malformed)"),
            (&[], "(malformed)"),
        ] {
            assert_eq!(oid_string(encoded), dotted);
        }
    }

    /// RFC 7292 appendix B.2 on a known answer: password "smeg", salt 0a58cf64530d823f,
    /// one iteration, 24 key bytes (ID 1) and 8 IV bytes (ID 2): the vector OpenSSL
    /// and Bouncy Castle test with. (The openssl-made files test it further.)
    #[test]
    fn pkcs12_kdf_known_answer() {
        let password = Password::new("smeg");
        let key = pkcs12_kdf(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            &password.bmp,
            &[0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f],
            KdfPurpose::Key,
            24,
            NonZeroU32::MIN,
        );
        assert_eq!(
            hex(&key),
            "8aaae6297b6cb04642ab5b077851284eb7128f1a2a7fbca3"
        );
        let iv = pkcs12_kdf(
            &digest::SHA1_FOR_LEGACY_USE_ONLY,
            &password.bmp,
            &[0x0a, 0x58, 0xcf, 0x64, 0x53, 0x0d, 0x82, 0x3f],
            KdfPurpose::Iv,
            8,
            NonZeroU32::MIN,
        );
        assert_eq!(hex(&iv), "79993dfe048d3b76");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The service principal reads a .pfx through this module, and still reads the PEM
    /// that `openssl pkcs12 -nodes` makes of it ("Bag Attributes" before each section).
    /// A file whose key derivation takes longer than the time left is given up on
    /// when the time is up, not when the file is done.
    #[test]
    fn decoding_is_bounded_by_the_budget() {
        use crate::credential::service_principal::Certificate;
        let dir = std::env::temp_dir().join(format!("kvrun-pkcs12-slow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let identity = &fixtures().self_signed;
        std::fs::write(dir.join("self.der"), &identity.certificate).unwrap();
        std::fs::write(dir.join("self.p8"), &identity.key).unwrap();
        openssl(
            &dir,
            &[
                "x509", "-inform", "DER", "-in", "self.der", "-out", "self.pem",
            ],
        );
        openssl(
            &dir,
            &[
                "pkey", "-inform", "DER", "-in", "self.p8", "-out", "self.key",
            ],
        );
        // 300,000 rounds for each of the key, the certificate and the MAC: about a
        // second of CPU, against a budget of 20 ms.
        openssl(
            &dir,
            &[
                "pkcs12",
                "-export",
                "-inkey",
                "self.key",
                "-in",
                "self.pem",
                "-passout",
                "pass:slow",
                "-iter",
                "300000",
                "-maciter",
                "-out",
                "slow.pfx",
            ],
        );
        let budget = std::time::Duration::from_millis(20);
        let error =
            Certificate::load(&dir.join("slow.pfx"), false, Some("slow"), budget).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            error.message.contains("did not finish within 0.02 s"),
            "{}",
            error.message
        );
    }

    #[test]
    fn service_principal_loads_a_pfx() {
        use crate::credential::service_principal::Certificate;
        let fixtures = fixtures();
        let dir = std::env::temp_dir().join(format!("kvrun-pkcs12-sp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pfx = dir.join("cert.pfx");
        let pem = dir.join("cert.pem");
        std::fs::write(&pfx, &fixtures.files[1]).unwrap();
        openssl(
            &dir,
            &[
                "pkcs12",
                "-legacy",
                "-in",
                "cert.pfx",
                "-passin",
                "pass:correct horse",
                "-out",
                "cert.pem",
                "-nodes",
            ],
        );
        let budget = std::time::Duration::from_secs(60);
        let loaded = Certificate::load(&pfx, true, Some("correct horse"), budget);
        let wrong = Certificate::load(&pfx, true, Some("nope"), budget).unwrap_err();
        let absent = Certificate::load(&pfx, true, None, budget).unwrap_err();
        let from_pem = Certificate::load(&pem, true, None, budget);
        let pem_text = std::fs::read_to_string(&pem).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            pem_text.starts_with("Bag Attributes"),
            "{}",
            &pem_text[..40]
        );
        for certificate in [loaded.unwrap(), from_pem.unwrap()] {
            let assertion = certificate
                .assertion("client", "https://login.example/token")
                .unwrap();
            assert_eq!(assertion.expose_secret().split('.').count(), 3);
        }
        assert!(
            wrong.message.contains("wrong password")
                && wrong.message.contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{}",
            wrong.message
        );
        assert!(
            absent.message.contains("wrong password")
                && absent
                    .message
                    .contains("set AZURE_CLIENT_CERTIFICATE_PASSWORD"),
            "{}",
            absent.message
        );
    }

    /// An empty password is the empty BMPString (two NUL bytes) for OpenSSL, and no
    /// bytes at all for some other writers: both open with "". OpenSSL writes only the
    /// first, so files of both kinds are made here from the unencrypted contents of
    /// the plain fixture, with a MAC keyed each way.
    #[test]
    fn empty_password_both_ways() {
        let fixtures = fixtures();
        let (index, _) = EXPORTS
            .iter()
            .enumerate()
            .find(|(_, e)| e.password.is_empty() && e.args.is_empty())
            .unwrap();
        let pfx = read_pfx(&fixtures.files[index]).unwrap();
        let mac = pfx.mac.as_ref().unwrap();
        assert!(mac.verify(pfx.auth_safe, &Password::new("").bmp));
        assert!(!mac.verify(pfx.auth_safe, &Password::absent().bmp));

        let auth_safe = read_pfx(&fixtures.plain).unwrap().auth_safe;
        let salt = [1, 2, 3, 4, 5, 6, 7, 8];
        for password in [Password::new(""), Password::absent()] {
            let key = pkcs12_kdf(
                &digest::SHA256,
                &password.bmp,
                &salt,
                KdfPurpose::Mac,
                32,
                NonZeroU32::new(2048).unwrap(),
            );
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), auth_safe);
            let file = build_pfx(auth_safe, tag.as_ref(), &salt);
            let p12 = parse(&file, "").unwrap();
            assert!(p12.certificates.len() == 2);
            assert!(parse(&file, "x").unwrap_err() == Pkcs12Error::WrongPassword);
        }
    }

    fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
        let value = parts.concat();
        let mut out = vec![tag];
        match u8::try_from(value.len()) {
            Ok(len) if len < 0x80 => out.push(len),
            _ => {
                out.push(0x82);
                out.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
            }
        }
        out.extend_from_slice(&value);
        out
    }

    /// A PFX with plain contents and a SHA-256 MAC of 2048 iterations.
    fn build_pfx(auth_safe: &[u8], mac: &[u8], salt: &[u8]) -> Vec<u8> {
        let content_info = tlv(
            SEQUENCE,
            &[
                &tlv(OID, &[oid::DATA]),
                &tlv(EXPLICIT_0, &[&tlv(OCTET_STRING, &[auth_safe])]),
            ],
        );
        let algorithm = tlv(SEQUENCE, &[&tlv(OID, &[oid::SHA256]), &tlv(NULL, &[])]);
        let mac_data = tlv(
            SEQUENCE,
            &[
                &tlv(SEQUENCE, &[&algorithm, &tlv(OCTET_STRING, &[mac])]),
                &tlv(OCTET_STRING, &[salt]),
                &tlv(INTEGER, &[&[0x08, 0x00]]),
            ],
        );
        tlv(
            SEQUENCE,
            &[&tlv(INTEGER, &[&[3]]), &content_info, &mac_data],
        )
    }
}
