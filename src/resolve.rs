//! Fetches every distinct secret of the plan, concurrently, and fails closed.
//!
//! Per vault, one task: learn the audience (known cloud, or the vault's challenge),
//! get the token for that audience (once per run, shared by every vault that needs
//! it), then fetch the vault's secrets in parallel over the shared connection
//! (HTTP/2 multiplexes them). A secret named by several variables is fetched once.
//! Whatever has not finished by the deadline is reported as such.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OnceCell, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::cloud;
use crate::config::{Plan, SecretId};
use crate::credential::{Credential, CredentialError, ErrorKind};
use crate::http::{Clients, Preconnected};
use crate::keyvault::{self, FetchError, Fetched};
use crate::reference::VaultUrl;
use crate::retry::Deadline;
use crate::secret::{AccessToken, TokenClaims};
use crate::timings::Timings;

/// Requests in flight at once, across vaults. HTTP/2 carries them on one connection
/// per vault; the bound keeps a 10,000-entry mapping from opening a storm. 128 lets a
/// mapping of 100 secrets go in one round trip (with 64 it took two, measured in
/// doc/performance.md); hyper queues whatever a server's stream limit holds back.
const MAX_IN_FLIGHT: usize = 128;

/// Requests in flight at once to one vault that did not give kvrun an HTTP/2
/// connection: each is a connection of its own over HTTP/1.1.
const MAX_IN_FLIGHT_WITHOUT_HTTP2: usize = 16;

/// Every distinct secret's outcome, and who we were.
#[derive(Debug, Default)]
pub struct Resolution {
    pub outcomes: BTreeMap<SecretId, Result<Fetched, FetchError>>,
    /// Claims of the tokens used, per vault, for hints in 401/403 messages.
    pub identities: HashMap<VaultUrl, TokenClaims>,
    /// Tenants named by vault challenges, for hints.
    pub challenge_tenants: HashMap<VaultUrl, String>,
}

type TokenCell = Arc<OnceCell<Result<Arc<AccessToken>, CredentialError>>>;

struct Shared {
    clients: Clients,
    credential: Credential,
    deadline: Deadline,
    tokens: Mutex<HashMap<String, TokenCell>>,
    permits: Semaphore,
    timings: Arc<Timings>,
    results: Mutex<Resolution>,
    /// Vaults whose task is waiting for a token, and for which audience: at the
    /// deadline, their secrets are reported as the identity's failure, not the vault's.
    awaiting_token: Mutex<HashMap<VaultUrl, String>>,
}

impl Shared {
    /// The token for `audience`: fetched by the first task that asks, awaited by the rest.
    async fn token(&self, audience: &str) -> Result<Arc<AccessToken>, CredentialError> {
        let cell = {
            let mut tokens = lock(&self.tokens);
            tokens.entry(audience.to_owned()).or_default().clone()
        };
        cell.get_or_init(|| async {
            let started = Instant::now();
            let result = self
                .credential
                .get_token(&self.clients, self.deadline, audience)
                .await
                .map(Arc::new);
            self.timings.record(
                format!(
                    "identity ({}, audience {audience})",
                    self.credential.description()
                ),
                started.elapsed(),
            );
            match &result {
                Ok(_) => crate::info!(
                    "identity: token for {audience} from {}",
                    self.credential.description()
                ),
                Err(e) => crate::debug!("identity: no token for {audience}: {e}"),
            }
            result
        })
        .await
        .clone()
    }

    fn store(&self, id: SecretId, result: Result<Fetched, FetchError>) {
        let mut results = lock(&self.results);
        results.outcomes.insert(id, result);
    }
}

/// Resolves the plan. Never fails as a whole: each secret gets its own outcome.
pub async fn resolve(
    plan: &Plan,
    credential: Credential,
    clients: Clients,
    deadline: Deadline,
    timings: Arc<Timings>,
) -> Resolution {
    let mut by_vault: BTreeMap<VaultUrl, Vec<SecretId>> = BTreeMap::new();
    for id in plan.distinct_secrets() {
        by_vault.entry(id.vault.clone()).or_default().push(id);
    }
    let shared = Arc::new(Shared {
        clients,
        credential,
        deadline,
        tokens: Mutex::new(HashMap::new()),
        permits: Semaphore::new(MAX_IN_FLIGHT),
        timings,
        results: Mutex::new(Resolution::default()),
        awaiting_token: Mutex::new(HashMap::new()),
    });
    let mut vaults = JoinSet::new();
    for (vault, ids) in by_vault.clone() {
        vaults.spawn(resolve_vault(shared.clone(), vault, ids));
    }
    let finished = tokio::time::timeout(deadline.remaining(), async {
        while vaults.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        vaults.abort_all();
    }
    let mut resolution = std::mem::take(&mut *lock(&shared.results));
    let awaiting = std::mem::take(&mut *lock(&shared.awaiting_token));
    for (vault, ids) in by_vault {
        let unfinished = match awaiting.get(&vault) {
            Some(audience) => FetchError::Token(CredentialError::new(
                shared.credential.description(),
                ErrorKind::GaveUp,
                format!(
                    "no token for {audience} before the deadline (the identity endpoint did not answer in time)"
                ),
            )),
            None => FetchError::DeadlineExceeded,
        };
        for id in ids {
            resolution
                .outcomes
                .entry(id)
                .or_insert_with(|| Err(unfinished.clone()));
        }
    }
    resolution
}

type Connecting = JoinHandle<Result<Preconnected, String>>;

/// Starts opening `vault`'s HTTP/2 connection in the background.
fn preconnect(shared: &Arc<Shared>, vault: &VaultUrl) -> Connecting {
    let shared = shared.clone();
    let vault = vault.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        let result = shared
            .clients
            .connector
            .connect(vault.host(), vault.port())
            .await;
        shared.timings.record(
            format!("vault {vault} connection (TCP, TLS, HTTP/2)"),
            started.elapsed(),
        );
        result
    })
}

/// The pre-opened connection, or None (logged) when it could not be made: the pooled
/// client then connects as usual and reports whatever goes wrong.
async fn settle(handle: Connecting, deadline: Deadline) -> Option<Preconnected> {
    match tokio::time::timeout(deadline.remaining(), handle).await {
        Ok(Ok(Ok(connection))) => Some(connection),
        Ok(Ok(Err(why))) => {
            crate::debug!("no pre-opened connection: {why}");
            None
        }
        Ok(Err(_)) | Err(_) => None,
    }
}

async fn resolve_vault(shared: Arc<Shared>, vault: VaultUrl, ids: Vec<SecretId>) {
    let started = Instant::now();
    let fail_all = |error: FetchError| {
        for id in &ids {
            shared.store(id.clone(), Err(error.clone()));
        }
    };
    // The vault's TCP, TLS and HTTP/2 handshakes need no token: start them now, so
    // that for a known cloud they overlap the token fetch. An unknown host's challenge
    // request is the first to need the connection, so it waits for it.
    let mut connecting = Some(preconnect(&shared, &vault));
    let mut early = None;
    if cloud::known_audience(vault.host()).is_none()
        && let Some(handle) = connecting.take()
    {
        early = settle(handle, shared.deadline).await;
    }
    let discovered = {
        let _permit = shared.permits.acquire().await;
        keyvault::audience_for(
            &shared.clients.tls,
            early.as_ref(),
            &vault,
            &ids[0],
            shared.deadline,
        )
        .await
    };
    let discovered = match discovered {
        Ok(d) => d,
        Err(e) => return fail_all(e),
    };
    if let Some(tenant) = &discovered.tenant {
        let mut results = lock(&shared.results);
        results
            .challenge_tenants
            .insert(vault.clone(), tenant.clone());
    }
    lock(&shared.awaiting_token).insert(vault.clone(), discovered.audience.clone());
    let token = shared.token(&discovered.audience).await;
    lock(&shared.awaiting_token).remove(&vault);
    let token = match token {
        Ok(token) => token,
        Err(e) => return fail_all(FetchError::Token(e)),
    };
    {
        let mut results = lock(&shared.results);
        results.identities.insert(vault.clone(), token.claims());
    }
    if let Some(handle) = connecting.take() {
        early = settle(handle, shared.deadline).await;
    }
    let vault_permits = Arc::new(Semaphore::new(if early.is_some() {
        MAX_IN_FLIGHT
    } else {
        MAX_IN_FLIGHT_WITHOUT_HTTP2
    }));
    let mut fetches = JoinSet::new();
    for id in ids.iter().cloned() {
        let (shared, token, early) = (shared.clone(), token.clone(), early.clone());
        let vault_permits = vault_permits.clone();
        fetches.spawn(async move {
            let result = {
                let _vault_permit = vault_permits.acquire().await;
                let _permit = shared.permits.acquire().await;
                keyvault::get_secret(
                    &shared.clients.tls,
                    early.as_ref(),
                    &id,
                    &token,
                    shared.deadline,
                )
                .await
            };
            match &result {
                Ok(_) => crate::debug!("vault {}: fetched {}", id.vault, id.name),
                Err(e) => crate::debug!("vault {}: {} failed: {e}", id.vault, id.name),
            }
            shared.store(id, result);
        });
    }
    while fetches.join_next().await.is_some() {}
    shared.timings.record(
        format!(
            "vault {vault} ({} secret{})",
            ids.len(),
            if ids.len() == 1 { "" } else { "s" }
        ),
        started.elapsed(),
    );
}

/// A poisoned lock only means another task panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
