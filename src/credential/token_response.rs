//! Reading token responses of every source, and the error bodies that come instead.
//!
//! The sources disagree on types (protocol reference §1.4): IMDS sends every number as
//! a string, Entra sends numbers, App Service 2017-09-01 sends `expires_on` as a date
//! string (`"05/22/2021 17:14:33 +00:00"`, `"1/16/2020 5:24:12 AM +00:00"`), the Azure
//! CLI uses `accessToken` and `expires_on` (an integer). One lenient reader takes them
//! all; an expiry it cannot read is simply unknown, never an error.

use serde::Deserialize;

use crate::secret::{AccessToken, SecretValue};

#[derive(Deserialize)]
struct RawToken {
    #[serde(alias = "accessToken")]
    access_token: Option<SecretValue>,
    expires_on: Option<serde_json::Value>,
    #[serde(rename = "expiresOn")]
    expires_on_cli: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenResponseError {
    #[error("the response is not JSON: {0}")]
    NotJson(String),
    #[error("the response has no access token")]
    NoToken,
}

/// Parses a successful token response. `now` (Unix seconds) anchors `expires_in`.
pub fn parse(body: &[u8], now: u64) -> Result<AccessToken, TokenResponseError> {
    // serde_json's messages give a position and a category, never the input text.
    let raw: RawToken =
        serde_json::from_slice(body).map_err(|e| TokenResponseError::NotJson(e.to_string()))?;
    let token = raw
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or(TokenResponseError::NoToken)?;
    let expires_on = raw
        .expires_on
        .as_ref()
        .and_then(expiry_value)
        .or_else(|| raw.expires_on_cli.as_ref().and_then(expiry_value))
        .or_else(|| {
            raw.expires_in
                .as_ref()
                .and_then(number_value)
                .map(|s| now.saturating_add(s))
        });
    Ok(AccessToken::new(token, expires_on))
}

fn number_value(value: &serde_json::Value) -> Option<u64> {
    match value {
        // Whole seconds; a fractional or negative number is not a usable expiry.
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn expiry_value(value: &serde_json::Value) -> Option<u64> {
    number_value(value).or_else(|| value.as_str().and_then(parse_date))
}

/// Parses the date forms managed-identity endpoints use, to Unix seconds:
/// `MM/dd/yyyy HH:mm:ss[ AM|PM] [+00:00]`, `yyyy-MM-dd HH:mm:ss[.ffffff]` and RFC 3339.
/// Offsets other than zero are applied. Returns None for anything else.
pub fn parse_date(text: &str) -> Option<u64> {
    let text = text.trim();
    let (date, rest) = text.split_once([' ', 'T'])?;
    let (year, month, day) = if date.contains('/') {
        let mut parts = date.split('/');
        let (m, d, y) = (parts.next()?, parts.next()?, parts.next()?);
        (
            y.parse::<i64>().ok()?,
            m.parse::<u32>().ok()?,
            d.parse::<u32>().ok()?,
        )
    } else {
        let mut parts = date.split('-');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        (
            y.parse::<i64>().ok()?,
            m.parse::<u32>().ok()?,
            d.parse::<u32>().ok()?,
        )
    };
    let mut tokens = rest.split_whitespace();
    let time = tokens.next()?;
    let (time, mut offset_secs) = split_offset(time)?;
    let mut hms = time.split(':');
    let mut hour: u32 = hms.next()?.parse().ok()?;
    let minute: u32 = hms.next()?.parse().ok()?;
    let second: u32 = hms.next().unwrap_or("0").split('.').next()?.parse().ok()?;
    for token in tokens {
        match token.to_ascii_uppercase().as_str() {
            // "12:00:00 PM" is noon; the 2017 doc sample's "00:00:00 PM" is read as noon too.
            "AM" => hour %= 12,
            "PM" => hour = hour % 12 + 12,
            offset => offset_secs = parse_offset(offset)?,
        }
    }
    // Bounded so the arithmetic below cannot overflow on hostile input.
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    u64::try_from(seconds).ok()
}

/// Splits a trailing `Z` or `±hh:mm` glued to the time (RFC 3339).
fn split_offset(time: &str) -> Option<(&str, i64)> {
    if let Some(t) = time.strip_suffix(['Z', 'z']) {
        return Some((t, 0));
    }
    match time.rfind(['+', '-']) {
        Some(i) if i > 0 => Some((&time[..i], parse_offset(&time[i..])?)),
        _ => Some((time, 0)),
    }
}

fn parse_offset(text: &str) -> Option<i64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest
        .split_once(':')
        .unwrap_or((rest.get(..2)?, rest.get(2..).unwrap_or("0")));
    let (h, m) = (h.parse::<i64>().ok()?, m.parse::<i64>().ok()?);
    if !(0..=24).contains(&h) || !(0..=59).contains(&m) {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The readable part of an identity endpoint's error body, whatever its shape:
/// `{"error":"x","error_description":"y"}` (IMDS, Entra), `{"error":{"code","message"}}`
/// (Cloud Shell, Service Fabric), `{"statusCode","message"}` (App Service), or
/// `{"Message": ...}`. Only the first line, at most 300 characters: descriptions are
/// diagnostics, not secrets, but they need not flood the terminal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: Option<String>,
    pub description: Option<String>,
    pub error_codes: Vec<u64>,
}

pub fn parse_error_body(body: &[u8]) -> ErrorBody {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return ErrorBody::default();
    };
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(first_line);
    let mut out = ErrorBody::default();
    match value.get("error") {
        Some(serde_json::Value::String(code)) => {
            out.code = Some(code.clone());
            out.description = text(value.get("error_description"));
        }
        Some(nested @ serde_json::Value::Object(_)) => {
            out.code = text(nested.get("code"));
            out.description = text(nested.get("message"));
        }
        _ => {
            out.description = text(value.get("message").or_else(|| value.get("Message")));
            // App Service's numeric statusCode only repeats the HTTP status.
        }
    }
    if let Some(codes) = value.get("error_codes").and_then(|c| c.as_array()) {
        out.error_codes = codes.iter().filter_map(serde_json::Value::as_u64).collect();
    }
    out
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn token_shapes_of_every_source() {
        for (body, expected) in [
            // IMDS (recording mi-imds-token-200-system-assigned-go-2025.json): strings.
            (
                r#"{"access_token":"t","expires_in":"86090","expires_on":"1740272916","token_type":"Bearer"}"#,
                Some(1_740_272_916),
            ),
            // Entra: numbers, no expires_on.
            (
                r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"t"}"#,
                Some(NOW + 3599),
            ),
            // App Service 2017-09-01: date string.
            (
                r#"{"access_token":"t","expires_on":"05/22/2021 17:14:33 +00:00","token_type":"Bearer"}"#,
                Some(1_621_703_673),
            ),
            // Service Fabric: number.
            (
                r#"{"access_token":"t","expires_on":1565244611}"#,
                Some(1_565_244_611),
            ),
            // Azure CLI.
            (
                r#"{"accessToken":"t","expiresOn":"2030-01-02 03:04:05.000000","expires_on":1893553445}"#,
                Some(1_893_553_445),
            ),
            (
                r#"{"accessToken":"t","expiresOn":"2030-01-02 03:04:05.000000"}"#,
                Some(1_893_553_445),
            ),
            // Unreadable expiry: unknown, not an error.
            (r#"{"access_token":"t","expires_on":"soon"}"#, None),
        ] {
            let token = parse(body.as_bytes(), NOW).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(token.expires_on, expected, "{body}");
            assert_eq!(token.expose_secret(), "t");
        }
    }

    #[test]
    fn bad_token_responses() {
        assert!(matches!(
            parse(b"<html>", NOW),
            Err(TokenResponseError::NotJson(_))
        ));
        assert_eq!(
            parse(br#"{"token_type":"Bearer"}"#, NOW).unwrap_err(),
            TokenResponseError::NoToken
        );
        assert_eq!(
            parse(br#"{"access_token":""}"#, NOW).unwrap_err(),
            TokenResponseError::NoToken
        );
        let err = parse(
            br#"{"access_token":"canary-secret-token","expires_in":[}"#,
            NOW,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("canary"), "{err}");
    }

    #[test]
    fn date_forms() {
        for (text, expected) in [
            ("05/22/2021 17:14:33 +00:00", Some(1_621_703_673)),
            ("1/16/2020 5:24:12 AM +00:00", Some(1_579_152_252)),
            ("1/16/2020 5:24:12 PM +00:00", Some(1_579_195_452)),
            ("06/20/2019 02:57:58 +00:00", Some(1_560_999_478)),
            ("09/14/2017 00:00:00 PM +00:00", Some(1_505_390_400)),
            ("2030-01-02 03:04:05.000000", Some(1_893_553_445)),
            ("2030-01-02T03:04:05Z", Some(1_893_553_445)),
            ("2030-01-02T05:04:05+02:00", Some(1_893_553_445)),
            ("2030-13-02 03:04:05", None),
            // Hostile values: no overflow, just unknown.
            ("1/1/2020 0:0:0 +3000000000000000:00", None),
            ("1/1/9223372036854775807 0:0:0", None),
            ("1/1/-9223372036854775807 0:0:0", None),
            ("1969-12-31 23:59:59", None),
            ("yesterday", None),
            ("", None),
        ] {
            assert_eq!(parse_date(text), expected, "{text}");
        }
    }

    #[test]
    fn error_body_shapes() {
        for (body, code, description) in [
            (
                r#"{"error":"invalid_request","error_description":"Identity not found"}"#,
                Some("invalid_request"),
                Some("Identity not found"),
            ),
            (
                r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x","error_codes":[7000215]}"#,
                Some("invalid_client"),
                Some("AADSTS7000215: Invalid client secret provided."),
            ),
            (
                r#"{"error":{"code":"SecretHeaderNotFound","message":"Secret is not found in the request headers."}}"#,
                Some("SecretHeaderNotFound"),
                Some("Secret is not found in the request headers."),
            ),
            (
                r#"{"statusCode":400,"message":"No MSI found"}"#,
                None,
                Some("No MSI found"),
            ),
            ("not json", None, None),
        ] {
            let parsed = parse_error_body(body.as_bytes());
            assert_eq!(parsed.code.as_deref(), code, "{body}");
            assert_eq!(parsed.description.as_deref(), description, "{body}");
        }
        assert_eq!(
            parse_error_body(br#"{"error":"x","error_codes":[700016]}"#).error_codes,
            [700_016]
        );
    }
}
