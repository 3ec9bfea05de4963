//! Wall-clock helpers: Unix seconds and the handful of date formats the Azure
//! endpoints put on the wire (App Service 2017's `MM/dd/yyyy HH:mm:ss +00:00`,
//! Entra's `yyyy-MM-dd HH:mm:ssZ`, RFC 3339 for the request log).
//!
//! Written out by hand because the emulator needs only UTC formatting, which is
//! a few lines of civil-calendar arithmetic, not a date-time crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, now. A clock before 1970 reads as 0.
pub(crate) fn now_secs() -> i64 {
    unix_secs(SystemTime::now())
}

pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// A UTC calendar date and time of day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

/// Splits Unix seconds into a UTC calendar date (proleptic Gregorian), after
/// Howard Hinnant's `civil_from_days`.
pub(crate) fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // All of these are small and non-negative by construction.
    let small = |v: i64| u32::try_from(v).unwrap_or(0);
    Civil {
        year,
        month: small(month),
        day: small(day),
        hour: small(rem / 3600),
        minute: small(rem % 3600 / 60),
        second: small(rem % 60),
    }
}

/// `05/22/2021 17:14:33 +00:00`: App Service's legacy (2017-09-01) `expires_on`.
pub(crate) fn app_service_2017(secs: i64) -> String {
    let c = civil(secs);
    format!(
        "{:02}/{:02}/{:04} {:02}:{:02}:{:02} +00:00",
        c.month, c.day, c.year, c.hour, c.minute, c.second
    )
}

/// `2022-08-08 20:48:16Z`: the `timestamp` field of Entra ID error bodies.
pub(crate) fn entra_timestamp(secs: i64) -> String {
    let c = civil(secs);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `2026-01-02T03:04:05.678Z`: request-log timestamps.
pub(crate) fn rfc3339_millis(t: SystemTime) -> String {
    let (secs, millis) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_millis(),
        ),
        Err(_) => (0, 0),
    };
    let c = civil(secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, millis
    )
}

/// The current calendar year, used to give generated certificates a validity
/// window around today without a date-time crate.
pub(crate) fn current_year() -> i32 {
    i32::try_from(civil(now_secs()).year).unwrap_or(2026)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_table() {
        type Case = (i64, (i64, u32, u32, u32, u32, u32));
        let cases: &[Case] = &[
            (0, (1970, 1, 1, 0, 0, 0)),
            (951_782_400, (2000, 2, 29, 0, 0, 0)),
            (1_621_703_673, (2021, 5, 22, 17, 14, 33)),
            (1_659_991_696, (2022, 8, 8, 20, 48, 16)),
            (4_102_444_799, (2099, 12, 31, 23, 59, 59)),
            (-1, (1969, 12, 31, 23, 59, 59)),
        ];
        for &(secs, (y, mo, d, h, mi, s)) in cases {
            let c = civil(secs);
            assert_eq!(
                (c.year, c.month, c.day, c.hour, c.minute, c.second),
                (y, mo, d, h, mi, s),
                "{secs}"
            );
        }
    }

    #[test]
    fn formats_match_the_recordings() {
        // mi-appservice-token-200-api2017-09-01-python-vcr-2021.json
        assert_eq!(
            app_service_2017(1_621_703_673),
            "05/22/2021 17:14:33 +00:00"
        );
        // aad-token-401-invalid-client-net-2022.json
        assert_eq!(entra_timestamp(1_659_991_696), "2022-08-08 20:48:16Z");
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_659_991_696_123);
        assert_eq!(rfc3339_millis(t), "2022-08-08T20:48:16.123Z");
    }
}
