//! Parsing `WWW-Authenticate` Bearer challenges from a vault's 401 (protocol reference
//! §9.5): `Bearer authorization="https://login.microsoftonline.com/<tenant>",
//! resource="https://vault.azure.net"`. SDKs also accept `authorization_uri` and
//! `scope` (a v2 scope ending in `/.default`); so does this parser. A header may hold
//! several challenges (`Bearer …, PoP …`): only the Bearer one counts.
//!
//! Whether the named resource may be used is decided elsewhere (`cloud.rs`).

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Challenge {
    pub authorization: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
}

impl Challenge {
    /// The token audience the challenge asks for: `resource`, or `scope` without its
    /// `/.default`.
    pub fn audience(&self) -> Option<String> {
        let raw = self.resource.clone().or_else(|| {
            self.scope
                .as_ref()
                .map(|s| s.strip_suffix("/.default").unwrap_or(s).to_owned())
        })?;
        let trimmed = raw.trim().trim_end_matches('/').to_owned();
        (!trimmed.is_empty()).then_some(trimmed)
    }

    /// The tenant: the first path segment of the authorization URL.
    pub fn tenant(&self) -> Option<String> {
        let url = reqwest::Url::parse(self.authorization.as_deref()?).ok()?;
        url.path_segments()?
            .next()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    }
}

/// The Bearer challenge in a `WWW-Authenticate` value, if there is one.
pub fn parse_bearer(header: &str) -> Option<Challenge> {
    let mut current_is_bearer = false;
    let mut found = None::<Challenge>;
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            break;
        }
        let token_end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start_matches(|c: char| c.is_ascii_whitespace());
        if token.is_empty() {
            // A stray '=' or similar: skip one character.
            rest = &rest[rest.chars().next().map_or(1, char::len_utf8)..];
            continue;
        }
        if let Some(value_part) = after.strip_prefix('=') {
            let value_part = value_part.trim_start_matches(|c: char| c.is_ascii_whitespace());
            let (value, remaining) = read_value(value_part);
            if current_is_bearer {
                let challenge = found.get_or_insert_with(Challenge::default);
                match token.to_ascii_lowercase().as_str() {
                    "authorization" | "authorization_uri" => challenge.authorization = Some(value),
                    "resource" => challenge.resource = Some(value),
                    "scope" => challenge.scope = Some(value),
                    _ => {}
                }
            }
            rest = remaining;
        } else {
            // A new auth scheme; the first Bearer wins.
            current_is_bearer = token.eq_ignore_ascii_case("bearer") && found.is_none();
            if current_is_bearer {
                found = Some(Challenge::default());
            }
            rest = after;
        }
    }
    found
}

/// A quoted-string (with `\` escapes) or a token, and what follows it.
fn read_value(input: &str) -> (String, &str) {
    if let Some(quoted) = input.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                _ => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = input
            .find(|c: char| c == ',' || c.is_ascii_whitespace())
            .unwrap_or(input.len());
        (input[..end].to_owned(), &input[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        for (header, audience, tenant) in [
            // Recording kv-401-challenge-put-api2025-07-01-net-2026.json.
            (
                r#"Bearer authorization="https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47", resource="https://vault.azure.net""#,
                Some("https://vault.azure.net"),
                Some("72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ),
            (
                r#"Bearer authorization_uri="https://login.windows.net/t1/", resource="https://vault.azure.net/""#,
                Some("https://vault.azure.net"),
                Some("t1"),
            ),
            (
                r#"Bearer authorization="https://login.microsoftonline.com/t1", scope="https://vault.azure.net/.default""#,
                Some("https://vault.azure.net"),
                Some("t1"),
            ),
            (
                r#"bearer resource=https://127.0.0.1:8443,authorization=https://127.0.0.1:9/t2"#,
                Some("https://127.0.0.1:8443"),
                Some("t2"),
            ),
            (
                r#"PoP nonce="abc", Bearer authorization="https://a/t3", resource="https://r.example""#,
                Some("https://r.example"),
                Some("t3"),
            ),
            (
                r#"Bearer resource="https://x\"y""#,
                Some("https://x\"y"),
                None,
            ),
            (r#"Bearer authorization="https://a/t4""#, None, Some("t4")),
        ] {
            let challenge = parse_bearer(header).unwrap_or_else(|| panic!("{header}"));
            assert_eq!(challenge.audience().as_deref(), audience, "{header}");
            assert_eq!(challenge.tenant().as_deref(), tenant, "{header}");
        }
    }

    #[test]
    fn not_bearer() {
        for header in [
            "Basic realm=/var/opt/azcmagent/tokens/x.key",
            "",
            "PoP nonce=\"x\"",
            "=,=",
            "Bearer",
        ] {
            let parsed = parse_bearer(header);
            assert!(
                parsed.as_ref().and_then(Challenge::audience).is_none(),
                "{header}: {parsed:?}"
            );
        }
    }
}
