//! Listeners, routing and lifetime: [`Emulator::start`] binds every endpoint
//! on 127.0.0.1, writes the state directory (CA certificate, federated token
//! files), and serves HTTP/1.1 and HTTP/2 from its own multi-thread tokio
//! runtime until [`Emulator::shutdown`] or drop.
//!
//! Every request goes through one path: read the body, apply the endpoint's
//! latency, then the first matching scripted fault, then its throttle, then
//! the endpoint's handler; the answer (or the dropped connection) is logged.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, HOST};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{
    Config, EndpointConfig, IdentityConfig, IdentityKind, Permission, Redacted, TlsMode,
};
use crate::faults::{Faults, TokenBucket};
use crate::http::{self, Body, BoxError, Outcome, Req};
use crate::keyvault::Vault;
use crate::log::{RequestLog, RequestRecord};
use crate::tls::{Authority, TlsError};
use crate::token::Signer;

/// Largest request body read; bigger ones get 413. Key Vault secret values
/// are at most 25 KB, so this leaves room for JSON and form encoding.
const MAX_REQUEST_BODY: usize = 1 << 20;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} for {endpoint}: {source}")]
    Bind {
        endpoint: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("state directory {}: {source}", path.display())]
    StateDir { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("TLS set-up failed: {0}")]
    Tls(#[from] TlsError),
    #[error("identity `{identity}`: certificate {}: {message}", path.display())]
    Certificate {
        identity: String,
        path: PathBuf,
        message: String,
    },
    #[error("cannot open the request log {}: {source}", path.display())]
    RequestLog { path: PathBuf, source: io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
}

/// Every endpoint the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointId {
    Imds,
    AppService,
    Entra,
    Arc,
    CloudShell,
    ServiceFabric,
    AzureMl,
    Vault(usize),
}

impl EndpointId {
    fn index(self) -> usize {
        match self {
            Self::Imds => 0,
            Self::AppService => 1,
            Self::Entra => 2,
            Self::Arc => 3,
            Self::CloudShell => 4,
            Self::ServiceFabric => 5,
            Self::AzureMl => 6,
            Self::Vault(i) => 7 + i,
        }
    }

    fn fixed_label(self) -> &'static str {
        match self {
            Self::Imds => "imds",
            Self::AppService => "app-service",
            Self::Entra => "entra",
            Self::Arc => "arc",
            Self::CloudShell => "cloud-shell",
            Self::ServiceFabric => "service-fabric",
            Self::AzureMl => "azure-ml",
            Self::Vault(_) => "vault",
        }
    }
}

/// Per-endpoint runtime settings.
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub label: String,
    pub latency: Duration,
    pub bucket: Option<Mutex<TokenBucket>>,
}

/// Base URLs of the servers, fixed once the listeners are bound.
#[derive(Debug, Clone)]
pub(crate) struct Urls {
    pub imds: String,
    pub app_service: String,
    pub authority: String,
    pub arc: String,
    pub cloud_shell: String,
    pub service_fabric: String,
    pub azure_ml: String,
}

/// Everything the request handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Connection accepts and request answers, numbered in the order they happen
    /// (see [`RequestRecord::connection`]).
    pub events: std::sync::atomic::AtomicU64,
    pub tenant_id: String,
    pub region: String,
    pub access_token_lifetime: Option<i64>,
    pub signer: Signer,
    pub identities: Vec<IdentityConfig>,
    /// DER of each service principal's certificate, by identity index.
    pub certificates: Vec<Option<Vec<u8>>>,
    by_oid: HashMap<String, usize>,
    grants: HashMap<(usize, usize), Vec<Permission>>,
    pub vaults: Vec<Vault>,
    pub urls: Urls,
    /// IDENTITY_HEADER / MSI_SECRET value, per run.
    pub identity_header: Redacted,
    pub service_fabric_thumbprint: String,
    /// Arc: the key file the 401 challenge names, and its content.
    pub arc_key_path: PathBuf,
    pub arc_key: Redacted,
    endpoints: Vec<EndpointState>,
    faults: Faults,
    pub started: Instant,
    pub log: RequestLog,
}

impl Shared {
    /// The next event number (accepts and answers share one sequence).
    pub(crate) fn next_event(&self) -> u64 {
        self.events
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn identity_by_oid(&self, oid: &str) -> Option<(usize, &IdentityConfig)> {
        self.by_oid
            .get(&oid.to_ascii_lowercase())
            .map(|&i| (i, &self.identities[i]))
    }

    pub(crate) fn permissions(&self, identity: usize, vault: usize) -> &[Permission] {
        self.grants
            .get(&(identity, vault))
            .map_or(&[], Vec::as_slice)
    }

    pub(crate) fn system_assigned(&self) -> Option<&IdentityConfig> {
        self.identities
            .iter()
            .find(|i| i.kind == IdentityKind::SystemAssigned)
    }

    pub(crate) fn endpoint(&self, ep: EndpointId) -> &EndpointState {
        &self.endpoints[ep.index()]
    }

    /// Lifetime of access tokens from a source whose real default is `default`.
    pub(crate) fn token_lifetime(&self, default: i64) -> i64 {
        self.access_token_lifetime.unwrap_or(default)
    }

    async fn respond(&self, ep: EndpointId, req: &Req) -> Outcome {
        let st = self.endpoint(ep);
        if !st.latency.is_zero() {
            tokio::time::sleep(st.latency).await;
        }
        if let Some(fault) = self.faults.find(&st.label, req, self.started.elapsed()) {
            return crate::faults::apply(self, ep, fault, req).await;
        }
        if let Some(bucket) = &st.bucket {
            let wait = bucket.lock().map_or(None, |mut b| b.take(Instant::now()));
            if let Some(wait) = wait {
                return Outcome::Respond(crate::faults::throttled(ep, wait));
            }
        }
        Outcome::Respond(self.dispatch(ep, req))
    }

    /// The endpoint's real answer, without faults.
    pub(crate) fn dispatch(&self, ep: EndpointId, req: &Req) -> Response<Body> {
        match ep {
            EndpointId::Imds => crate::identity::imds(self, req),
            EndpointId::AppService => crate::identity::app_service(self, req),
            EndpointId::Entra => crate::entra::handle(self, req),
            EndpointId::Arc => crate::identity::arc(self, req),
            EndpointId::CloudShell => crate::identity::cloud_shell(self, req),
            EndpointId::ServiceFabric => crate::identity::service_fabric(self, req),
            EndpointId::AzureMl => crate::identity::azure_ml(self, req),
            EndpointId::Vault(i) => crate::keyvault::handle(self, i, req),
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    ep: EndpointId,
    connection: u64,
    req: Request<Incoming>,
) -> Result<Response<Body>, BoxError> {
    let (parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(ToString::to_string))
        .unwrap_or_default();
    let raw_query = parts.uri.query().unwrap_or("");
    let auth = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            crate::log::auth_record(v, |oid| {
                shared.identity_by_oid(oid).map(|(_, i)| i.name.clone())
            })
        });
    let mut record = RequestRecord {
        endpoint: shared.endpoint(ep).label.clone(),
        method: parts.method.to_string(),
        host,
        path: parts.uri.path().to_owned(),
        query: crate::log::redact_query(raw_query),
        status: 0,
        auth,
        connection,
        answered: 0,
    };
    let log = |mut record: RequestRecord| {
        record.answered = shared.next_event();
        shared.log.record(record);
    };
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            record.status = 413;
            log(record);
            return Ok(http::json(
                413,
                &serde_json::json!({"error": {"code": "RequestTooLarge", "message": "The request body is too large."}}),
            ));
        }
    };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: http::parse_query(raw_query),
        headers: parts.headers,
        body,
    };
    match shared.respond(ep, &req).await {
        Outcome::Respond(mut resp) => {
            if let EndpointId::Vault(_) = ep {
                crate::keyvault::service_headers(&shared, &req, &mut resp);
            }
            record.status = resp.status().as_u16();
            log(record);
            Ok(resp)
        }
        Outcome::Abort => {
            log(record);
            Err("connection reset by an injected fault".into())
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    ep: EndpointId,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let tcp = tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                // Out of file descriptors and the like: back off, keep serving.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let connection = shared.next_event();
        let shared = shared.clone();
        let tls = tls.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(shared.clone(), ep, connection, req));
            let builder = auto::Builder::new(TokioExecutor::new());
            // A connection ends with the run: a hung request (the `hang`
            // fault) must not keep the runtime alive.
            match tls {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return; // Handshake failures are the client's business.
                    };
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(stream), svc) => {}
                        _ = stop.changed() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = builder.serve_connection(TokioIo::new(tcp), svc) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        });
    }
}

/// The state directory and the files the run wrote into it.
#[derive(Debug)]
struct StateDir {
    path: PathBuf,
    created: bool,
    files: Vec<PathBuf>,
}

impl StateDir {
    fn open(requested: Option<&Path>) -> Result<StateDir, StartError> {
        let (path, created) = match requested {
            Some(p) => {
                let existed = p.is_dir();
                if !existed {
                    create_private_dir(p).map_err(|source| StartError::StateDir {
                        path: p.to_path_buf(),
                        source,
                    })?;
                }
                (p.to_path_buf(), !existed)
            }
            None => {
                // A fresh, private, unpredictable directory: never a fixed
                // shared path another user could prepare.
                let name = format!(
                    "kvrun-emulator-{}-{}",
                    std::process::id(),
                    crate::ids::hex(&crate::ids::random_bytes::<6>())
                );
                let p = std::env::temp_dir().join(name);
                create_private_dir(&p).map_err(|source| StartError::StateDir {
                    path: p.clone(),
                    source,
                })?;
                (p, true)
            }
        };
        Ok(StateDir {
            path,
            created,
            files: Vec::new(),
        })
    }

    /// Writes a file atomically (temp file + rename) with mode 0600.
    fn write(&mut self, name: &str, content: &[u8]) -> Result<PathBuf, StartError> {
        let path = self.path.join(name);
        write_atomic(&path, content).map_err(|source| StartError::Write {
            path: path.clone(),
            source,
        })?;
        self.files.push(path.clone());
        Ok(path)
    }

    fn track(&mut self, path: PathBuf) {
        self.files.push(path);
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn create_private_dir(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
}

/// Writes `content` to `path` through a temporary file in the same directory
/// and a rename, so that readers never see a half-written file.
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{name}.{}.tmp",
        crate::ids::hex(&crate::ids::random_bytes::<6>())
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(content)?;
        // No fsync: the rename already makes the file appear whole to
        // readers, and the files do not outlive the run anyway.
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn bind(label: &str, port: u16) -> Result<StdListener, StartError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let l = StdListener::bind(addr).map_err(|source| StartError::Bind {
        endpoint: label.to_owned(),
        addr,
        source,
    })?;
    l.set_nonblocking(true).map_err(|source| StartError::Bind {
        endpoint: label.to_owned(),
        addr,
        source,
    })?;
    Ok(l)
}

fn port_of(l: &StdListener) -> u16 {
    l.local_addr().map_or(0, |a| a.port())
}

/// Reads the DER of the first certificate in a PEM file.
fn read_certificate(identity: &str, path: &Path) -> Result<Vec<u8>, StartError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let err = |message: String| StartError::Certificate {
        identity: identity.to_owned(),
        path: path.to_path_buf(),
        message,
    };
    let mut certs = CertificateDer::pem_file_iter(path).map_err(|e| err(e.to_string()))?;
    match certs.next() {
        Some(Ok(c)) => Ok(c.to_vec()),
        Some(Err(e)) => Err(err(e.to_string())),
        None => Err(err("no CERTIFICATE block found".to_owned())),
    }
}

fn endpoint_state(
    label: String,
    cfg_latency: u64,
    throttle: Option<crate::config::Throttle>,
) -> EndpointState {
    EndpointState {
        label,
        latency: Duration::from_millis(cfg_latency),
        bucket: throttle.map(|t| Mutex::new(TokenBucket::new(t))),
    }
}

/// A running emulator. Dropping it shuts every endpoint down and removes the
/// files it wrote.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    runtime: Option<Runtime>,
    stop: watch::Sender<bool>,
    ca_pem_path: PathBuf,
    state: StateDir,
}

impl Emulator {
    /// Starts every endpoint and returns once all are listening. Owns its own
    /// multi-thread tokio runtime on background threads, so synchronous tests
    /// can call it.
    #[allow(clippy::too_many_lines)] // Start-up order matters; it reads best in one place.
    #[allow(clippy::needless_pass_by_value)] // The public API takes the config by value.
    pub fn start(config: Config) -> Result<Emulator, StartError> {
        let started = Instant::now();
        // Bind first: a port in use is the most likely failure and must leave
        // nothing behind.
        let fixed_cfg: [(&EndpointConfig, EndpointId); 7] = [
            (&config.imds, EndpointId::Imds),
            (&config.app_service, EndpointId::AppService),
            (&config.entra, EndpointId::Entra),
            (&config.arc, EndpointId::Arc),
            (&config.cloud_shell, EndpointId::CloudShell),
            (&config.service_fabric, EndpointId::ServiceFabric),
            (&config.azure_ml, EndpointId::AzureMl),
        ];
        let mut listeners = Vec::new();
        for (cfg, ep) in fixed_cfg {
            listeners.push((ep, bind(ep.fixed_label(), cfg.port)?));
        }
        for (i, v) in config.vaults.iter().enumerate() {
            listeners.push((
                EndpointId::Vault(i),
                bind(&format!("vault:{}", v.name), v.port)?,
            ));
        }
        let port = |ep: EndpointId| port_of(&listeners[ep.index()].1);
        let base = |scheme: &str, ep: EndpointId| format!("{scheme}://127.0.0.1:{}", port(ep));
        let urls = Urls {
            imds: base("http", EndpointId::Imds),
            app_service: format!("{}/msi/token", base("http", EndpointId::AppService)),
            authority: base("https", EndpointId::Entra),
            arc: base("http", EndpointId::Arc),
            cloud_shell: format!("{}/oauth2/token", base("http", EndpointId::CloudShell)),
            service_fabric: format!(
                "{}/metadata/identity/oauth2/token",
                base("https", EndpointId::ServiceFabric)
            ),
            azure_ml: format!("{}/token", base("http", EndpointId::AzureMl)),
        };

        let mut state = StateDir::open(config.state_dir.as_deref())?;
        let authority = Authority::new()?;
        let ca_pem_path = state.write("ca.pem", authority.ca_pem.as_bytes())?;
        let signer = Signer::new();
        let now = crate::clock::now_secs();
        let resolve = |p: &Path| match &config.base_dir {
            Some(b) if p.is_relative() => b.join(p),
            _ => p.to_path_buf(),
        };

        // Identities: certificates to read, federated tokens to write.
        let mut certificates = Vec::new();
        for id in &config.identities {
            certificates.push(match &id.certificate {
                Some(p) => Some(read_certificate(&id.name, &resolve(p))?),
                None => None,
            });
        }
        let mut identities = config.identities.clone();
        for id in &mut identities {
            if id.kind != IdentityKind::Workload {
                continue;
            }
            let token = signer.federated_token(id, now);
            let path = match &id.token_file {
                Some(p) => {
                    let p = resolve(p);
                    write_atomic(&p, token.as_bytes()).map_err(|source| StartError::Write {
                        path: p.clone(),
                        source,
                    })?;
                    state.track(p.clone());
                    p
                }
                None => state.write(&format!("{}.token", id.name), token.as_bytes())?,
            };
            id.token_file = Some(path);
        }
        let arc_key = crate::ids::hex(&crate::ids::random_bytes::<32>());
        let arc_key_path = match &config.arc.key_dir {
            // Where real clients insist the agent's key files live (see [arc] key_dir).
            Some(dir) => {
                let dir = resolve(dir);
                std::fs::create_dir_all(&dir).map_err(|source| StartError::Write {
                    path: dir.clone(),
                    source,
                })?;
                let path = dir.join(format!(
                    "{}.key",
                    crate::ids::hex(&crate::ids::random_bytes::<8>())
                ));
                write_atomic(&path, arc_key.as_bytes()).map_err(|source| StartError::Write {
                    path: path.clone(),
                    source,
                })?;
                state.track(path.clone());
                path
            }
            None => state.write("arc-identity.key", arc_key.as_bytes())?,
        };

        let by_oid = identities
            .iter()
            .enumerate()
            .map(|(i, id)| (id.object_id.to_ascii_lowercase(), i))
            .collect();
        let identity_index: HashMap<&str, usize> = identities
            .iter()
            .enumerate()
            .map(|(i, id)| (id.name.as_str(), i))
            .collect();
        let vault_index: HashMap<String, usize> = config
            .vaults
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.to_ascii_lowercase(), i))
            .collect();
        let mut grants: HashMap<(usize, usize), Vec<Permission>> = HashMap::new();
        for g in &config.grants {
            if let (Some(&i), Some(&v)) = (
                identity_index.get(g.identity.as_str()),
                vault_index.get(&g.vault.to_ascii_lowercase()),
            ) {
                let e = grants.entry((i, v)).or_default();
                e.extend_from_slice(&g.permissions);
                e.sort();
                e.dedup();
            }
        }

        let vaults: Vec<Vault> = config
            .vaults
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let origin = match &v.host {
                    Some(host) => format!("https://{host}:{}", port(EndpointId::Vault(i))),
                    None => base("https", EndpointId::Vault(i)),
                };
                Vault::new(v, origin, now)
            })
            .collect();

        let mut endpoints: Vec<EndpointState> = fixed_cfg
            .iter()
            .map(|(cfg, ep)| {
                endpoint_state(ep.fixed_label().to_owned(), cfg.latency_ms, cfg.throttle)
            })
            .collect();
        for v in &config.vaults {
            endpoints.push(endpoint_state(
                format!("vault:{}", v.name),
                v.latency_ms,
                v.throttle,
            ));
        }

        let (sf_tls, service_fabric_thumbprint) = crate::tls::self_signed_pinned()?;
        let mut tls: HashMap<usize, Arc<ServerConfig>> = HashMap::new();
        tls.insert(
            EndpointId::Entra.index(),
            authority.server_config(TlsMode::Valid, None)?,
        );
        tls.insert(EndpointId::ServiceFabric.index(), sf_tls);
        for (i, v) in config.vaults.iter().enumerate() {
            tls.insert(
                EndpointId::Vault(i).index(),
                authority.server_config(v.tls, v.host.as_deref())?,
            );
        }

        let log = RequestLog::new(config.request_log.as_deref()).map_err(|source| {
            StartError::RequestLog {
                path: config.request_log.clone().unwrap_or_default(),
                source,
            }
        })?;

        let shared = Arc::new(Shared {
            events: std::sync::atomic::AtomicU64::new(1),
            tenant_id: config.tenant_id.clone(),
            region: config.region.clone(),
            access_token_lifetime: config.access_token_lifetime_secs,
            signer,
            identities,
            certificates,
            by_oid,
            grants,
            vaults,
            urls,
            identity_header: Redacted(crate::ids::hex(&crate::ids::random_bytes::<16>())),
            service_fabric_thumbprint,
            arc_key_path,
            arc_key: Redacted(arc_key),
            endpoints,
            faults: Faults::new(&config.faults),
            started,
            log,
        });

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kvrun-emulator")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let (stop, stop_rx) = watch::channel(false);
        for (ep, std_listener) in listeners {
            let acceptor = tls.get(&ep.index()).cloned().map(TlsAcceptor::from);
            let listener = {
                let _guard = runtime.enter();
                TcpListener::from_std(std_listener).map_err(|source| StartError::Bind {
                    endpoint: shared.endpoint(ep).label.clone(),
                    addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                    source,
                })?
            };
            runtime.spawn(accept_loop(
                listener,
                acceptor,
                shared.clone(),
                ep,
                stop_rx.clone(),
            ));
        }
        Ok(Emulator {
            shared,
            runtime: Some(runtime),
            stop,
            ca_pem_path,
            state,
        })
    }

    /// The `export` lines' variables, exactly what `--print-env` exports.
    pub fn env(&self) -> Vec<(String, String)> {
        crate::env::default_env(self)
    }

    /// `https://127.0.0.1:PORT` of the vault called `name` (case-insensitive).
    pub fn vault_url(&self, name: &str) -> Option<String> {
        self.shared
            .vaults
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case(name))
            .map(|v| v.origin.clone())
    }

    /// Names of the configured vaults, in config order.
    pub fn vault_names(&self) -> Vec<String> {
        self.shared.vaults.iter().map(|v| v.name.clone()).collect()
    }

    /// `http://127.0.0.1:PORT`, the IMDS base (AZURE_POD_IDENTITY_AUTHORITY_HOST).
    pub fn imds_host(&self) -> String {
        self.shared.urls.imds.clone()
    }

    /// The App Service token URL (IDENTITY_ENDPOINT).
    pub fn identity_endpoint(&self) -> String {
        self.shared.urls.app_service.clone()
    }

    /// IDENTITY_HEADER (also the legacy MSI_SECRET).
    pub fn identity_header(&self) -> String {
        self.shared.identity_header.0.clone()
    }

    /// `https://127.0.0.1:PORT`, the Entra ID authority host (AZURE_AUTHORITY_HOST).
    pub fn authority_host(&self) -> String {
        self.shared.urls.authority.clone()
    }

    pub fn tenant_id(&self) -> String {
        self.shared.tenant_id.clone()
    }

    /// The run's CA certificate (PEM).
    pub fn ca_pem_path(&self) -> PathBuf {
        self.ca_pem_path.clone()
    }

    /// The state directory (CA certificate, token files).
    pub fn state_dir(&self) -> PathBuf {
        self.state.path.clone()
    }

    /// Client id of the configured identity called `name`.
    pub fn client_id(&self, identity: &str) -> Option<String> {
        self.identity(identity).map(|i| i.client_id.clone())
    }

    /// Object (principal) id of the configured identity called `name`.
    pub fn object_id(&self, identity: &str) -> Option<String> {
        self.identity(identity).map(|i| i.object_id.clone())
    }

    /// ARM resource id of the configured identity called `name`, if it has one.
    pub fn resource_id(&self, identity: &str) -> Option<String> {
        self.identity(identity).and_then(|i| i.resource_id.clone())
    }

    /// Path of the federated token file of the workload identity `name`.
    pub fn federated_token_file(&self, identity: &str) -> Option<PathBuf> {
        self.identity(identity).and_then(|i| i.token_file.clone())
    }

    fn identity(&self, name: &str) -> Option<&IdentityConfig> {
        self.shared.identities.iter().find(|i| i.name == name)
    }

    /// [`Emulator::env`] with App Service's variables replaced by those that
    /// make SDKs pick `source`: one of `imds`, `arc`, `cloud-shell`,
    /// `service-fabric`, `azure-ml`, `app-service-legacy`
    /// ([`crate::env::SOURCES`]). `None` for any other name.
    pub fn env_for_source(&self, source: &str) -> Option<Vec<(String, String)>> {
        crate::env::env_for_source(self, source)
    }

    /// Env pairs that point clients at the emulated Azure Arc agent
    /// (IDENTITY_ENDPOINT + IMDS_ENDPOINT). Not part of [`Emulator::env`]:
    /// they change which credential clients pick.
    pub fn arc_env(&self) -> Vec<(String, String)> {
        crate::env::arc_env(self)
    }

    /// Env pairs for the emulated Cloud Shell endpoint (MSI_ENDPOINT only).
    pub fn cloud_shell_env(&self) -> Vec<(String, String)> {
        crate::env::cloud_shell_env(self)
    }

    /// Env pairs for the emulated Service Fabric endpoint (IDENTITY_ENDPOINT,
    /// IDENTITY_HEADER, IDENTITY_SERVER_THUMBPRINT, IDENTITY_API_VERSION).
    pub fn service_fabric_env(&self) -> Vec<(String, String)> {
        crate::env::service_fabric_env(self)
    }

    /// Env pairs for the emulated Azure ML endpoint (MSI_ENDPOINT, MSI_SECRET,
    /// DEFAULT_IDENTITY_CLIENT_ID).
    pub fn azure_ml_env(&self) -> Vec<(String, String)> {
        crate::env::azure_ml_env(self)
    }

    /// Env pairs for App Service's legacy 2017-09-01 protocol (MSI_ENDPOINT +
    /// MSI_SECRET pointing at the App Service endpoint).
    pub fn app_service_legacy_env(&self) -> Vec<(String, String)> {
        crate::env::app_service_legacy_env(self)
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The request log so far, in order (the most recent 100,000 requests).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.snapshot()
    }

    /// Stops every endpoint and removes the files the run wrote.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.runtime.take() {
            // Dropping a runtime from inside another one's async context
            // panics; there, let it wind down in the background.
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
        }
    }
}
