//! kvrun-emulator: a local Azure for tests, demos and benchmarks. On loopback
//! it serves IMDS and the App Service managed-identity endpoint (HTTP), an
//! Entra ID token endpoint and any number of Key Vaults (HTTPS, with a CA made
//! for the run), faithful enough that Microsoft's own SDKs accept it.
//!
//! ```no_run
//! let emulator = kvrun_emulator::Emulator::start(kvrun_emulator::Config::default())?;
//! for (name, value) in emulator.env() {
//!     // AZURE_POD_IDENTITY_AUTHORITY_HOST, IDENTITY_ENDPOINT, ..., KVRUN_VAULT
//!     let _ = (name, value);
//! }
//! # Ok::<(), kvrun_emulator::StartError>(())
//! ```
//!
//! Configuration is TOML ([`Config::from_toml`], [`Config::load`]); every key
//! is described in the crate's README.

// Handlers return their error responses through `Result`; a `Response` is
// moved once per request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod clock;
mod config;
mod entra;
mod env;
mod faults;
mod http;
mod identity;
mod ids;
mod keyvault;
mod log;
mod server;
mod tls;
mod token;

pub use config::{Config, ConfigError, DEFAULT_TENANT_ID};
pub use env::{SOURCES, export_lines, shell_quote};
pub use log::{AuthRecord, RequestRecord, fingerprint};
pub use server::{Emulator, StartError};
pub use tls::TlsError;
