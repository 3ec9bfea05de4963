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
use tokio::task::JoinSet;

use crate::config::{Plan, SecretId};
use crate::credential::{Credential, CredentialError};
use crate::http::Clients;
use crate::keyvault::{self, FetchError, Fetched};
use crate::reference::VaultUrl;
use crate::retry::Deadline;
use crate::secret::{AccessToken, TokenClaims};
use crate::timings::Timings;

/// Requests in flight at once, across vaults. HTTP/2 carries them on one connection
/// per vault; the bound keeps a 10,000-entry mapping from opening a storm.
const MAX_IN_FLIGHT: usize = 64;

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
}

impl Shared {
    /// The token for `audience`: fetched by the first task that asks, awaited by the rest.
    async fn token(&self, audience: &str) -> Result<Arc<AccessToken>, CredentialError> {
        let cell = {
            let mut tokens = self
                .tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
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
        let mut results = self
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
    let mut resolution = std::mem::take(
        &mut *shared
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    for id in by_vault.into_values().flatten() {
        resolution
            .outcomes
            .entry(id)
            .or_insert(Err(FetchError::DeadlineExceeded));
    }
    resolution
}

async fn resolve_vault(shared: Arc<Shared>, vault: VaultUrl, ids: Vec<SecretId>) {
    let started = Instant::now();
    let fail_all = |error: FetchError| {
        for id in &ids {
            shared.store(id.clone(), Err(error.clone()));
        }
    };
    let discovered = {
        let _permit = shared.permits.acquire().await;
        keyvault::audience_for(&shared.clients.tls, &vault, &ids[0], shared.deadline).await
    };
    let discovered = match discovered {
        Ok(d) => d,
        Err(e) => return fail_all(e),
    };
    if let Some(tenant) = &discovered.tenant {
        let mut results = shared
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        results
            .challenge_tenants
            .insert(vault.clone(), tenant.clone());
    }
    let token = match shared.token(&discovered.audience).await {
        Ok(token) => token,
        Err(e) => return fail_all(FetchError::Token(e)),
    };
    {
        let mut results = shared
            .results
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        results.identities.insert(vault.clone(), token.claims());
    }
    let mut fetches = JoinSet::new();
    for id in ids.iter().cloned() {
        let (shared, token) = (shared.clone(), token.clone());
        fetches.spawn(async move {
            let result = {
                let _permit = shared.permits.acquire().await;
                keyvault::get_secret(&shared.clients.tls, &id, &token, shared.deadline).await
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
