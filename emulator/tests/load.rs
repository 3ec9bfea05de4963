//! Throughput of GET secret over one HTTP/2 connection (ignored by default:
//! run it on a release build, which is what benchmarks use):
//!
//! ```text
//! cargo test --release -p kvrun-emulator --test load -- --ignored --nocapture
//! ```
//!
//! Client and emulator share the machine, so the figure is a lower bound for
//! the emulator alone.

// Test helpers state their expectations with expect(); a failure is the test's.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvrun_emulator::{Config, Emulator};

const REQUESTS: usize = 20_000;
const IN_FLIGHT: usize = 32;

#[test]
#[ignore = "load generator: run explicitly on a release build"]
fn get_secret_throughput_over_one_h2_connection() {
    let cfg = Config::from_toml(
        "[[vault]]\nname = \"demo\"\n[[vault.secret]]\nname = \"db-password\"\nvalue = \"s3cret\"\n\
         [[identity]]\nname = \"system\"\nkind = \"system-assigned\"\n\
         [[grant]]\nidentity = \"system\"\nvault = \"demo\"\npermissions = [\"get\"]\n",
        "load.toml",
    )
    .expect("config");
    let emu = Emulator::start(cfg).expect("start");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(emu.ca_pem_path()).expect("ca"))
        .expect("pem");
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        // One connection: HTTP/2 (negotiated by ALPN) multiplexes every request on it.
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let vault = emu.vault_url("demo").expect("vault");
    let imds = emu.imds_host();
    // The client gets one worker thread; the emulator runs its own two.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (elapsed, version) = rt.block_on(async move {
        let token: serde_json::Value = serde_json::from_str(
            &client
                .get(format!(
                    "{imds}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={vault}"
                ))
                .header("Metadata", "true")
                .send()
                .await
                .expect("imds")
                .text()
                .await
                .expect("body"),
        )
        .expect("json");
        let auth = Arc::new(format!(
            "Bearer {}",
            token["access_token"].as_str().expect("token")
        ));
        let url = Arc::new(format!(
            "{vault}/secrets/db-password?api-version=2025-07-01"
        ));
        // Warm up the connection (TLS handshake, HTTP/2 settings).
        let warm = client
            .get(url.as_str())
            .header("authorization", auth.as_str())
            .send()
            .await
            .expect("warm");
        let version = warm.version();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..IN_FLIGHT {
            let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..REQUESTS / IN_FLIGHT {
                    let r = client
                        .get(url.as_str())
                        .header("authorization", auth.as_str())
                        .send()
                        .await
                        .expect("get");
                    assert_eq!(r.status(), 200);
                    let _ = r.bytes().await.expect("body");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        (started.elapsed(), version)
    });
    let rps = REQUESTS as f64 / elapsed.as_secs_f64();
    println!(
        "{REQUESTS} GET secret over one {version:?} connection, {IN_FLIGHT} in flight: {elapsed:?}, {rps:.0} requests/s"
    );
    assert_eq!(version, reqwest::Version::HTTP_2);
    assert!(elapsed < Duration::from_secs(60));
    // How many connections served the vault: the request log knows the hosts
    // but not connections, so the HTTP/2 version check above stands for it.
    assert!(emu.requests().len() > REQUESTS);
}
