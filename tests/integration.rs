//! kvrun's one integration-test binary: the real `kvrun` executable against the
//! in-process `kvrun-emulator`. One module per area of the contract.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers: a failed setup should panic"
)]

mod harness;

/// Bad input of every kind: 125, a clear message, never a panic; 10,000 entries.
mod bad_input;
/// Usage, exit codes 125/126/127, help, `check`.
mod cli;
/// Vault connections: known-cloud minimum, opened during the token fetch, HTTP/2.
mod connections;
/// Each credential source against its emulated endpoint.
mod credentials;
/// Child environment: byte-exact values, replacement, same PID, argv.
mod exec;
/// Vault refusals, optional entries, faults, redirects, audiences.
mod failures;
/// The network fault matrix: identity, Entra ID and Key Vault faults, one case each.
mod fault_matrix;
/// Canary values and tokens never appear in any output, at any verbosity.
mod redaction;
/// Every reference form and mapping source, end to end.
mod references;
