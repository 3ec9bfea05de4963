//! kvrun's logger: leveled lines on stderr, as text or JSON lines.
//!
//! The only things ever logged are names: variables, vaults, secrets, credential
//! sources, hosts, statuses and durations. Nothing in this module can take a
//! `SecretValue` or an `AccessToken`, because neither implements `Display`.

#![allow(
    clippy::print_stderr,
    reason = "this module is the one place that writes log lines"
)]

use std::fmt;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    /// `-v` counts up from the default (warn).
    pub fn from_verbosity(count: u8) -> Self {
        match count {
            0 => Level::Warn,
            1 => Level::Info,
            2 => Level::Debug,
            _ => Level::Trace,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    level: Level,
    format: Format,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Sets the level and format once, at start-up. Before that, only warnings and errors
/// are written, as text.
pub fn init(level: Level, format: Format) {
    let _ = SETTINGS.set(Settings { level, format });
}

fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or(Settings {
        level: Level::Warn,
        format: Format::Text,
    })
}

pub fn enabled(level: Level) -> bool {
    level <= settings().level
}

pub fn json_format() -> bool {
    settings().format == Format::Json
}

/// Writes one log line. Use the `error!` … `trace!` macros.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    let settings = settings();
    if level > settings.level {
        return;
    }
    let message = args.to_string();
    let line = match settings.format {
        Format::Text => format!("kvrun: {}: {message}\n", level.name()),
        Format::Json => {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let object = serde_json::json!({"ts": ts, "level": level.name(), "message": message});
            format!("{object}\n")
        }
    };
    // One write per line so lines from concurrent tasks never interleave.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

#[macro_export]
macro_rules! error { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)*)) } }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($t)*)) } }
#[macro_export]
macro_rules! trace { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Trace, format_args!($($t)*)) } }
