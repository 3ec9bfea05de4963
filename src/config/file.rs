//! The mapping file, `kvrun.toml`: where it is found and how it is read.
//!
//! ```toml
//! vault = "myvault"                # or "https://myvault.vault.azure.net"
//! cloud = "public"                 # optional
//! [env]
//! DB_PASSWORD = "sqlAzure--AdminPassword"
//! NPM_TOKEN   = { secret = "npm-token", vault = "other", version = "0123…", optional = true }
//! ```
//! Unknown keys are errors, reported as `file:line:column: message`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub const FILE_NAME: &str = "kvrun.toml";

/// A mapping file as written, before references are parsed.
#[derive(Debug, Default)]
pub struct MappingFile {
    pub path: PathBuf,
    pub vault: Option<Located<String>>,
    pub cloud: Option<Located<String>>,
    pub entries: Vec<FileEntry>,
}

/// One `[env]` entry.
#[derive(Debug)]
pub struct FileEntry {
    pub var: Located<String>,
    pub reference: Located<String>,
    pub vault: Option<Located<String>>,
    pub version: Option<Located<String>>,
    pub optional: bool,
}

/// A value with the line and column it was written at.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
    pub column: usize,
}

/// An error in the mapping file, at a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// `kvrun.toml` in `dir` or its nearest ancestor.
pub fn discover(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join(FILE_NAME))
        .find(|p| p.is_file())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    vault: Option<Spanned<String>>,
    cloud: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

/// Reads and parses a mapping file.
pub fn load(path: &Path) -> Result<MappingFile, FileError> {
    let fail = |message: String| FileError {
        path: path.to_owned(),
        line: 0,
        column: 0,
        message,
    };
    // Generous: a 10,000-entry mapping is about 200 KB.
    let bytes = crate::secret::read_file_capped(path, 16 * 1024 * 1024)
        .map_err(|e| fail(format!("cannot read the mapping file: {e}")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| fail("cannot read the mapping file: it is not UTF-8 text".to_owned()))?;
    parse(text, path)
}

/// Parses mapping-file text; `path` is only used in errors.
pub fn parse(text: &str, path: &Path) -> Result<MappingFile, FileError> {
    // Built once: every entry is located, and a 10,000-entry file must not be
    // rescanned from the top for each of them.
    let lines = LineIndex::new(text);
    let at = |span: Option<Range<usize>>, message: String| {
        let (line, column) = lines.locate(text, span.map_or(0, |s| s.start));
        FileError {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    };
    let raw: RawFile =
        toml::from_str(text).map_err(|e| at(e.span(), e.message().trim_end().to_owned()))?;
    let locate = |s: Spanned<String>| {
        let (line, column) = lines.locate(text, s.span().start);
        Located {
            value: s.into_inner(),
            line,
            column,
        }
    };
    let mut entries = Vec::with_capacity(raw.env.len());
    for (var, value) in raw.env {
        let span = value.span();
        let (line, column) = lines.locate(text, span.start);
        let entry = match value.into_inner() {
            toml::Value::String(reference) => FileEntry {
                var: locate(var),
                reference: Located {
                    value: reference,
                    line,
                    column,
                },
                vault: None,
                version: None,
                optional: false,
            },
            toml::Value::Table(table) => {
                let mut entry = FileEntry {
                    var: locate(var.clone()),
                    reference: Located {
                        value: String::new(),
                        line,
                        column,
                    },
                    vault: None,
                    version: None,
                    optional: false,
                };
                let mut secret = None;
                for (key, value) in table {
                    let wrong = |want: &str| {
                        at(
                            Some(span.clone()),
                            format!("in {}: '{key}' must be {want}", var.get_ref()),
                        )
                    };
                    let located = |v: String| Located {
                        value: v,
                        line,
                        column,
                    };
                    match (key.as_str(), value) {
                        ("secret", toml::Value::String(s)) => secret = Some(located(s)),
                        ("vault", toml::Value::String(s)) => entry.vault = Some(located(s)),
                        ("version", toml::Value::String(s)) => entry.version = Some(located(s)),
                        ("optional", toml::Value::Boolean(b)) => entry.optional = b,
                        ("secret" | "vault" | "version", _) => return Err(wrong("a string")),
                        ("optional", _) => return Err(wrong("true or false")),
                        _ => {
                            return Err(at(
                                Some(span.clone()),
                                format!(
                                    "in {}: unknown key '{key}' (expected secret, vault, version, optional)",
                                    var.get_ref()
                                ),
                            ));
                        }
                    }
                }
                entry.reference = secret.ok_or_else(|| {
                    at(
                        Some(span.clone()),
                        format!(
                            "in {}: missing 'secret' (the secret's name or reference)",
                            var.get_ref()
                        ),
                    )
                })?;
                entry
            }
            _ => {
                return Err(at(
                    Some(span),
                    format!(
                        "{}: expected a reference string or a table {{ secret = \"...\", ... }}",
                        var.get_ref()
                    ),
                ));
            }
        };
        entries.push(entry);
    }
    Ok(MappingFile {
        path: path.to_owned(),
        vault: raw.vault.map(locate),
        cloud: raw.cloud.map(locate),
        entries,
    })
}

/// Byte offsets where each line starts, to turn offsets into positions.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { starts }
    }

    /// 1-based line and column (in characters) of a byte offset in `text`.
    fn locate(&self, text: &str, offset: usize) -> (usize, usize) {
        let offset = offset.min(text.len());
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts[line - 1];
        let column = text.get(start..offset).map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }
}

/// 1-based line and column (in characters) of a byte offset.
#[cfg(test)]
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).locate(text, offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<MappingFile, FileError> {
        parse(text, Path::new("kvrun.toml"))
    }

    #[test]
    fn reads_every_entry_form() {
        let file = parse_str(
            "vault = \"myvault\"\ncloud = \"china\"\n[env]\nZ_FIRST = \"db\"\nA_SECOND = { secret = \"npm\", vault = \"other\", version = \"0123456789abcdef0123456789abcdef\", optional = true }\n",
        )
        .unwrap();
        assert_eq!(file.vault.unwrap().value, "myvault");
        assert_eq!(file.cloud.unwrap().value, "china");
        let vars: Vec<_> = file.entries.iter().map(|e| e.var.value.as_str()).collect();
        assert_eq!(vars, ["A_SECOND", "Z_FIRST"]);
        let second = &file.entries[0];
        assert_eq!(second.reference.value, "npm");
        assert_eq!(second.vault.as_ref().unwrap().value, "other");
        assert!(second.optional);
        assert_eq!((second.reference.line, second.var.line), (5, 5));
    }

    #[test]
    fn empty_file_is_an_empty_mapping() {
        assert!(parse_str("").unwrap().entries.is_empty());
    }

    #[test]
    fn errors_name_line_and_column() {
        for (text, line, column, needle) in [
            ("vault = \n", 1, 9, "string"),
            ("valt = \"x\"\n", 1, 1, "unknown field `valt`"),
            ("[env]\nA = 1\n", 2, 5, "expected a reference string"),
            (
                "[env]\nA = { secret = \"x\", optinal = true }\n",
                2,
                5,
                "unknown key 'optinal'",
            ),
            ("[env]\nA = { vault = \"v\" }\n", 2, 5, "missing 'secret'"),
            (
                "[env]\nA = { secret = \"x\", optional = \"yes\" }\n",
                2,
                5,
                "'optional' must be true or false",
            ),
            ("[env]\nA = \"x\"\nA = \"y\"\n", 3, 1, "duplicate key"),
            ("[env\n", 1, 5, ""),
        ] {
            let err = parse_str(text).expect_err(text);
            assert_eq!((err.line, err.column), (line, column), "{text:?}: {err}");
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
            assert!(err.to_string().starts_with("kvrun.toml:"), "{err}");
        }
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé d", 7), (2, 4));
        assert_eq!(line_column("", 0), (1, 1));
    }
}
