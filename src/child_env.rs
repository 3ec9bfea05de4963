//! The child's environment, built byte-exact in zeroizing buffers.
//!
//! environment = inherited, with references replaced and mapped variables set (the
//! mapping wins); an optional secret that was absent leaves its variable unset, even
//! if the inherited environment held a reference for it. Values keep every byte
//! (newlines, unicode, `=`, surrounding spaces); a NUL cannot be represented and is
//! an error. Each entry is `NAME=value\0`, ready for `execve`, and is zeroized when
//! dropped — so a failed exec leaves no copy behind.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsString};
use std::os::unix::ffi::OsStrExt as _;

use zeroize::Zeroizing;

use crate::secret::SecretValue;

#[derive(Debug)]
pub struct ChildEnv {
    entries: Vec<Zeroizing<Vec<u8>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: the value contains a NUL byte, which an environment variable cannot hold")]
pub struct NulInValue {
    pub var: String,
}

impl ChildEnv {
    /// `set` wins over `inherited`; names in `unset` are removed.
    pub fn build(
        inherited: &[(OsString, OsString)],
        set: &[(&str, &SecretValue)],
        unset: &[&str],
    ) -> Result<Self, NulInValue> {
        let mut merged: BTreeMap<&[u8], Zeroizing<Vec<u8>>> = BTreeMap::new();
        for (name, value) in inherited {
            merged.insert(name.as_bytes(), entry(name.as_bytes(), value.as_bytes()));
        }
        for name in unset {
            merged.remove(name.as_bytes());
        }
        for (name, value) in set {
            let bytes = value.expose_secret().as_bytes();
            if bytes.contains(&0) {
                return Err(NulInValue {
                    var: (*name).to_owned(),
                });
            }
            merged.insert(name.as_bytes(), entry(name.as_bytes(), bytes));
        }
        Ok(Self {
            entries: merged.into_values().collect(),
        })
    }

    /// The entries as C strings for `execve`, borrowing the zeroizing buffers.
    pub fn as_c_strs(&self) -> Vec<&CStr> {
        self.entries
            .iter()
            .filter_map(|e| CStr::from_bytes_with_nul(e).ok())
            .collect()
    }
}

fn entry(name: &[u8], value: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(name.len() + value.len() + 2));
    bytes.extend_from_slice(name);
    bytes.push(b'=');
    bytes.extend_from_slice(value);
    bytes.push(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn inherited_replaced_set_and_unset() {
        let secret = SecretValue::new(" multi\nline=ü ".into());
        let env = ChildEnv::build(
            &os(&[
                ("PATH", "/bin"),
                ("DB", "keyvault://v/db"),
                ("OPT", "keyvault://v/opt"),
            ]),
            &[("DB", &secret), ("NEW", &secret)],
            &["OPT"],
        )
        .unwrap();
        let entries: Vec<String> = env
            .as_c_strs()
            .iter()
            .map(|c| c.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            entries,
            ["DB= multi\nline=ü ", "NEW= multi\nline=ü ", "PATH=/bin"]
        );
    }

    #[test]
    fn nul_is_refused() {
        let secret = SecretValue::new("a\0b".into());
        assert_eq!(
            ChildEnv::build(&[], &[("X", &secret)], &[]).unwrap_err(),
            NulInValue { var: "X".into() }
        );
    }
}
