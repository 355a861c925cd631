//! TLS for every PostgreSQL connection tenant-plane opens (the control
//! database, LISTEN, admin connections to db hosts, tenant pools), with
//! rustls and libpq's conventions:
//!
//! | `sslmode` | encrypts | checks the chain | checks the host name | plaintext |
//! |---|---|---|---|---|
//! | `disable` | no | | | always |
//! | `prefer` (default) | if the server can | no | no | if the server has no TLS |
//! | `require` | yes | no (yes with `sslrootcert`, as libpq: then like `verify-ca`) | no | never |
//! | `verify-ca` | yes | yes | no | never |
//! | `verify-full` | yes | yes | yes | never |
//!
//! `sslrootcert` is a PEM file of trusted CAs, or `system` for the operating
//! system's store (then, as in libpq, `sslmode` defaults to `verify-full`
//! and weaker modes are refused). `sslcert` + `sslkey` give a client
//! certificate. tokio-postgres does not know these keys (nor `verify-ca` and
//! `verify-full`), so [`ConnectOptions::parse`] takes them out of a URL (or a
//! `key=value` string) and hands the rest to tokio-postgres.
//!
//! SCRAM channel binding (`tls-server-end-point`) is used whenever the
//! connection is encrypted and the server offers it (`channel_binding`
//! defaults to `prefer`; `channel_binding=require` in the URL insists).
//!
//! Unlike libpq, `prefer` does not retry in plaintext after a failed TLS
//! handshake (it verifies nothing, so only a broken server fails one), and
//! `~/.postgresql/root.crt` is never read: trust is always named.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The URL keys this module takes out of a connection string.
const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// libpq TLS keys tenant-plane does not implement: refused by name rather
/// than passed on to tokio-postgres, whose error would not say why.
const UNSUPPORTED_KEYS: [&str; 10] = [
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslcertmode",
    "sslcompression",
    "sslkeylogfile",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
];

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether the server's certificate chain is checked.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SslMode {
    type Err = TlsError;
    fn from_str(s: &str) -> Result<Self, TlsError> {
        SslMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| TlsError::BadMode(s.to_owned()))
    }
}

/// libpq's `sslrootcert`: the CAs a server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RootCert {
    /// The operating system's trust store (`sslrootcert=system`).
    System,
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
}

impl RootCert {
    pub fn parse(value: &str) -> Result<Self, TlsError> {
        match value {
            "" => Err(TlsError::EmptyValue("sslrootcert")),
            "system" => Ok(RootCert::System),
            path => Ok(RootCert::File(PathBuf::from(path))),
        }
    }

    /// As written in a URL or a `db_hosts.sslrootcert` column.
    pub fn as_str(&self) -> Cow<'_, str> {
        match self {
            RootCert::System => Cow::Borrowed("system"),
            RootCert::File(path) => path.to_string_lossy(),
        }
    }
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl Serialize for RootCert {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

/// A client certificate and its private key (`sslcert` + `sslkey`), PEM.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS settings of one connection target, validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    mode: SslMode,
    root_cert: Option<RootCert>,
    client_cert: Option<ClientCert>,
}

impl Default for TlsSettings {
    /// libpq's default: `sslmode=prefer`, nothing verified.
    fn default() -> Self {
        Self {
            mode: SslMode::Prefer,
            root_cert: None,
            client_cert: None,
        }
    }
}

impl TlsSettings {
    /// Settings from libpq's parameters, with libpq's defaults (`prefer`,
    /// or `verify-full` with `sslrootcert=system`).
    pub fn new(
        mode: Option<SslMode>,
        root_cert: Option<RootCert>,
        client_cert: Option<ClientCert>,
    ) -> Result<Self, TlsError> {
        let mode = mode.unwrap_or(match root_cert {
            Some(RootCert::System) => SslMode::VerifyFull,
            _ => SslMode::Prefer,
        });
        if root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
            return Err(TlsError::SystemNeedsVerifyFull(mode));
        }
        if mode.verifies() && root_cert.is_none() {
            return Err(TlsError::NoRootCert(mode));
        }
        Ok(Self {
            mode,
            root_cert,
            client_cert,
        })
    }

    /// From the text of libpq's four parameters (absent ones `None`).
    pub fn from_params(
        sslmode: Option<&str>,
        sslrootcert: Option<&str>,
        sslcert: Option<&str>,
        sslkey: Option<&str>,
    ) -> Result<Self, TlsError> {
        let mode = sslmode
            .map(|m| match m {
                "" => Err(TlsError::EmptyValue("sslmode")),
                m => m.parse(),
            })
            .transpose()?;
        let root = sslrootcert.map(RootCert::parse).transpose()?;
        let client = match (sslcert, sslkey) {
            (None, None) => None,
            (Some(""), _) => return Err(TlsError::EmptyValue("sslcert")),
            (_, Some("")) => return Err(TlsError::EmptyValue("sslkey")),
            (Some(cert), Some(key)) => Some(ClientCert {
                cert: cert.into(),
                key: key.into(),
            }),
            (Some(_), None) => return Err(TlsError::HalfClientCert("sslcert", "sslkey")),
            (None, Some(_)) => return Err(TlsError::HalfClientCert("sslkey", "sslcert")),
        };
        Self::new(mode, root, client)
    }

    /// `sslmode` as given (or defaulted).
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// What the connection does: `require` with `sslrootcert` checks the
    /// chain, as libpq does, so it behaves as `verify-ca`.
    pub fn effective_mode(&self) -> SslMode {
        match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        }
    }

    pub fn root_cert(&self) -> Option<&RootCert> {
        self.root_cert.as_ref()
    }

    pub fn client_cert(&self) -> Option<&ClientCert> {
        self.client_cert.as_ref()
    }

    /// The same without a client certificate.
    pub fn without_client_cert(&self) -> Self {
        Self {
            client_cert: None,
            ..self.clone()
        }
    }

    /// These settings with a client certificate.
    pub fn with_client_cert(&self, client_cert: Option<ClientCert>) -> Self {
        Self {
            client_cert,
            ..self.clone()
        }
    }

    /// A db host's settings: its own `sslmode`/`sslrootcert` where set,
    /// these (database.url's) where not. A host naming `sslrootcert=system`
    /// without `sslmode` gets `verify-full`, as in libpq. The client
    /// certificate is not carried over: it is database.url's own.
    pub fn for_host(&self, host: &HostTls) -> Result<Self, TlsError> {
        let root = host.sslrootcert.clone().or_else(|| self.root_cert.clone());
        let mode = match (host.sslmode, &host.sslrootcert) {
            (Some(mode), _) => mode,
            (None, Some(RootCert::System)) => SslMode::VerifyFull,
            (None, _) => self.mode,
        };
        Self::new(Some(mode), root, None)
    }

    /// `sslmode=...&sslrootcert=...&sslcert=...&sslkey=...`, percent-encoded,
    /// to append to a URL.
    pub fn url_params(&self) -> String {
        let mut params = vec![format!("sslmode={}", self.mode)];
        if let Some(root) = &self.root_cert {
            params.push(format!("sslrootcert={}", percent_encode(&root.as_str())));
        }
        if let Some(c) = &self.client_cert {
            params.push(format!(
                "sslcert={}",
                percent_encode(&c.cert.to_string_lossy())
            ));
            params.push(format!(
                "sslkey={}",
                percent_encode(&c.key.to_string_lossy())
            ));
        }
        params.join("&")
    }

    /// The connector for these settings: reads the CA and client
    /// certificate files now (the system store once per process).
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        let mode = self.effective_mode();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = match (&self.root_cert, mode) {
            (Some(root), SslMode::VerifyCa | SslMode::VerifyFull) => Some(load_roots(root)?),
            _ => None,
        };
        let verifier = Verifier {
            roots,
            check_name: mode == SslMode::VerifyFull,
            algorithms: provider.signature_verification_algorithms,
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(c) => {
                let (certs, key) = load_client_cert(c)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| TlsError::ClientCert {
                        cert: c.cert.clone(),
                        reason: e.to_string(),
                    })?
            }
        };
        // PostgreSQL 17's direct negotiation (sslnegotiation=direct) needs
        // it; older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(TlsConnector {
            inner: MakeRustlsConnect::new(config),
            mode,
            trust: self.root_cert.as_ref().map(|r| Arc::from(r.to_string())),
        })
    }
}

/// A db host's own TLS settings (`db_hosts.sslmode`, `db_hosts.sslrootcert`);
/// `None` inherits database.url's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostTls {
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<RootCert>,
}

impl HostTls {
    /// From the columns' text.
    pub fn from_columns(
        sslmode: Option<&str>,
        sslrootcert: Option<&str>,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            sslmode: sslmode.map(str::parse).transpose()?,
            sslrootcert: sslrootcert.map(RootCert::parse).transpose()?,
        })
    }

    pub fn is_inherited(&self) -> bool {
        self.sslmode.is_none() && self.sslrootcert.is_none()
    }
}

impl From<&TlsSettings> for HostTls {
    /// A host that sets `tls` as its own (the client certificate aside).
    fn from(tls: &TlsSettings) -> Self {
        Self {
            sslmode: Some(tls.mode()),
            sslrootcert: tls.root_cert().cloned(),
        }
    }
}

/// Wrong TLS settings, or certificate files that cannot be used. Never
/// repeats a URL (it may hold a password), only TLS keys and file paths.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid sslmode {0:?}: use disable, prefer, require, verify-ca or verify-full")]
    BadMode(String),
    #[error("{0} is empty")]
    EmptyValue(&'static str),
    #[error("{0} is given without {1}: a client certificate needs both")]
    HalfClientCert(&'static str, &'static str),
    #[error("sslrootcert=system needs sslmode=verify-full (as in libpq); got sslmode={0}")]
    SystemNeedsVerifyFull(SslMode),
    #[error("sslmode={0} needs sslrootcert: a PEM file of trusted CAs, or `system` for the operating system's store")]
    NoRootCert(SslMode),
    #[error("{0} is given more than once in the connection string")]
    Repeated(&'static str),
    #[error("{0} is not supported by tenant-plane (supported TLS keys: sslmode, sslrootcert, sslcert, sslkey)")]
    Unsupported(String),
    #[error("the connection string is malformed: {0}")]
    Malformed(&'static str),
    #[error("invalid database URL: {}", crate::describe(.0))]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sslrootcert {path}: {reason}")]
    RootCert { path: PathBuf, reason: String },
    #[error(
        "sslrootcert=system: the operating system's trust store gave no usable certificate ({0})"
    )]
    SystemStore(String),
    #[error("client certificate {cert}: {reason}")]
    ClientCert { cert: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// A connection that could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Settings(#[from] TlsError),
    #[error("cannot connect to {target}: {}", crate::describe(.source))]
    Connect {
        /// `host:port` of the first host.
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl ConnectError {
    /// The driver's error, when the connection attempt was made.
    pub fn db_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            ConnectError::Connect { source, .. } => Some(source),
            ConnectError::Settings(_) => None,
        }
    }

    /// The server's SQLSTATE, when it refused the connection.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        self.db_error().and_then(|e| e.code())
    }
}

/// The stream of a connection made by [`TlsConnector`].
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
/// A connection made by [`ConnectOptions::connect`]: spawn it, or poll it
/// for notifications.
pub type Connection = tokio_postgres::Connection<Socket, TlsStream>;

/// Where to connect and how: tokio-postgres's settings and the TLS ones it
/// does not know. `connect` and `manager` apply the TLS mode to the config.
/// There is deliberately no `From<Config>`: a bare config would silently
/// lose the URL's verification.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub config: Config,
    pub tls: TlsSettings,
}

impl ConnectOptions {
    pub fn new(config: Config, tls: TlsSettings) -> Self {
        Self { config, tls }
    }

    /// Parses a `postgres://` URL or a libpq `key=value` string. The TLS keys
    /// are taken out and validated; the rest goes to tokio-postgres. Errors
    /// never repeat the string: it may hold a password.
    pub fn parse(url: &str) -> Result<Self, TlsError> {
        let (rest, tls) = split_tls_params(url)?;
        let config = rest.parse::<Config>().map_err(TlsError::Url)?;
        Ok(Self { config, tls })
    }

    /// `host:port` of the first host, for messages.
    pub fn target(&self) -> String {
        target(&self.config)
    }

    /// The config with the TLS mode applied.
    pub fn pg_config(&self) -> Config {
        let mut config = self.config.clone();
        config.ssl_mode(match self.tls.effective_mode() {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        config
    }

    /// Opens a connection. Under `require` and stricter, a server without
    /// TLS is an error, never a plaintext session.
    pub async fn connect(&self) -> Result<(Client, Connection), ConnectError> {
        let connector = self.tls.connector()?;
        self.pg_config()
            .connect(connector)
            .await
            .map_err(|source| ConnectError::Connect {
                target: self.target(),
                source,
            })
    }

    /// Opens a connection whose I/O runs on a task of its own, ended when
    /// the client is dropped.
    pub async fn connect_spawned(&self) -> Result<Client, ConnectError> {
        let (client, connection) = self.connect().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed");
            }
        });
        Ok(client)
    }

    /// A deadpool manager connecting with these settings.
    pub fn manager(
        &self,
        manager_config: deadpool_postgres::ManagerConfig,
    ) -> Result<deadpool_postgres::Manager, TlsError> {
        Ok(deadpool_postgres::Manager::from_config(
            self.pg_config(),
            self.tls.connector()?,
            manager_config,
        ))
    }
}

fn target(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

// ------------------------------------------------------------- the connector

/// tokio-postgres's TLS connector for one [`TlsSettings`]: rustls, with
/// channel binding (tls-server-end-point), and handshake errors that name
/// the host and say what was wrong with its certificate.
#[derive(Clone)]
pub struct TlsConnector {
    inner: MakeRustlsConnect,
    mode: SslMode,
    trust: Option<Arc<str>>,
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("mode", &self.mode)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

type InnerConnect<S> = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;

impl<S> MakeTlsConnect<S> for TlsConnector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = HostConnect<S>;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> Result<HostConnect<S>, io::Error> {
        let inner =
            <MakeRustlsConnect as MakeTlsConnect<S>>::make_tls_connect(&mut self.inner, host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(HostConnect {
            inner,
            host: host.to_owned(),
            mode: self.mode,
            trust: self.trust.clone(),
        })
    }
}

/// One handshake, with the host it is for.
pub struct HostConnect<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    inner: InnerConnect<S>,
    host: String,
    mode: SslMode,
    trust: Option<Arc<str>>,
}

impl<S> TlsConnect<S> for HostConnect<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, HandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let HostConnect {
            inner,
            host,
            mode,
            trust,
        } = self;
        let handshake = inner.connect(stream);
        Box::pin(async move {
            handshake.await.map_err(|source| HandshakeError {
                host,
                mode,
                trust,
                source,
            })
        })
    }
}

/// A failed TLS handshake: the host, the mode, and why.
#[derive(Debug)]
pub struct HandshakeError {
    host: String,
    mode: SslMode,
    trust: Option<Arc<str>>,
    source: io::Error,
}

impl HandshakeError {
    /// The rustls error behind it, if any.
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        self.source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = &self.host;
        write!(f, "TLS with {host:?} failed (sslmode={}): ", self.mode)?;
        let trust = self.trust.as_deref().unwrap_or("none");
        match self.rustls_error() {
            Some(rustls::Error::InvalidCertificate(e)) => match e {
                CertificateError::UnknownIssuer => write!(
                    f,
                    "the server's certificate is not signed by a trusted CA (sslrootcert={trust})"
                ),
                CertificateError::NotValidForName => write!(
                    f,
                    "the server's certificate is not valid for the host name {host:?}"
                ),
                CertificateError::NotValidForNameContext { presented, .. } => write!(
                    f,
                    "the server's certificate is not valid for the host name {host:?} (it is for {})",
                    presented
                        .iter()
                        .map(|name| presented_name(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    write!(f, "the server's certificate has expired")
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    write!(f, "the server's certificate is not valid yet")
                }
                other => write!(f, "the server's certificate was refused: {other:?}"),
            },
            Some(other) => write!(f, "{other}"),
            None => write!(f, "{}", self.source),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// `localhost` for rustls's `DnsName("localhost")`, `127.0.0.1` for
/// `IpAddress(127.0.0.1)`.
fn presented_name(name: &str) -> &str {
    for (open, close) in [("DnsName(\"", "\")"), ("IpAddress(", ")")] {
        if let Some(inner) = name
            .strip_prefix(open)
            .and_then(|rest| rest.strip_suffix(close))
        {
            return inner;
        }
    }
    name
}

/// Checks the chain (verify-ca, verify-full) and the name (verify-full);
/// with no roots (prefer, require) it accepts any certificate, as libpq
/// does. Handshake signatures are always checked, so the peer holds the
/// key of the certificate that channel binding hashes.
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    check_name: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if self.check_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn load_roots(root: &RootCert) -> Result<Arc<RootCertStore>, TlsError> {
    match root {
        RootCert::System => system_roots(),
        RootCert::File(path) => {
            let certs = read_certs(path, "sslrootcert")?;
            let mut store = RootCertStore::empty();
            for cert in certs {
                store.add(cert).map_err(|e| TlsError::RootCert {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            Ok(Arc::new(store))
        }
    }
}

/// The operating system's store, loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static SYSTEM: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(if errors.is_empty() {
                    "no certificates found".to_owned()
                } else {
                    errors.join("; ")
                });
            }
            Ok(Arc::new(store))
        })
        .clone()
        .map_err(TlsError::SystemStore)
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::RootCert {
            path: path.to_owned(),
            reason: format!("not a PEM certificate file ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::RootCert {
            path: path.to_owned(),
            reason: "holds no PEM certificate".to_owned(),
        });
    }
    Ok(certs)
}

fn load_client_cert(
    c: &ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = read_certs(&c.cert, "sslcert").map_err(|e| match e {
        TlsError::RootCert { path, reason } => TlsError::ClientCert { cert: path, reason },
        other => other,
    })?;
    let bytes = std::fs::read(&c.key).map_err(|source| TlsError::Read {
        what: "sslkey",
        path: c.key.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::ClientCert {
        cert: c.cert.clone(),
        reason: format!("sslkey {} holds no PEM private key ({e})", c.key.display()),
    })?;
    Ok((certs, key))
}

// ------------------------------------------------------- connection strings

/// Takes the TLS keys out of a connection string: the rest, and the
/// settings they make.
pub fn split_tls_params(url: &str) -> Result<(String, TlsSettings), TlsError> {
    let (rest, params) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_url(url)?
    } else {
        split_key_values(url)?
    };
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    };
    let tls = TlsSettings::from_params(
        get("sslmode"),
        get("sslrootcert"),
        get("sslcert"),
        get("sslkey"),
    )?;
    Ok((rest, tls))
}

type Params = Vec<(&'static str, String)>;

fn take(params: &mut Params, key: &str, value: String) -> Result<bool, TlsError> {
    if UNSUPPORTED_KEYS.contains(&key) {
        return Err(TlsError::Unsupported(key.to_owned()));
    }
    let Some(known) = TLS_KEYS.iter().find(|k| **k == key) else {
        return Ok(false);
    };
    if params.iter().any(|(k, _)| k == known) {
        return Err(TlsError::Repeated(known));
    }
    params.push((known, value));
    Ok(true)
}

fn split_url(url: &str) -> Result<(String, Params), TlsError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), Vec::new()));
    };
    let mut params = Vec::new();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        if !take(&mut params, &key, percent_decode(value)?)? {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

/// libpq's `key = value` form: values may be single-quoted, backslash
/// escapes a character.
fn split_key_values(s: &str) -> Result<(String, Params), TlsError> {
    let mut params = Vec::new();
    let mut kept: Vec<&str> = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &s[start..i];
        skip_ws(&mut i);
        if i >= bytes.len() || bytes[i] != b'=' {
            return Err(TlsError::Malformed("a key without `=`"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == b'\'' {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(TlsError::Malformed("an unterminated quoted value")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        let c = s[i + 1..].chars().next().expect("a character");
                        value.push(c);
                        i += 1 + c.len_utf8();
                    }
                    Some(_) => {
                        let c = s[i..].chars().next().expect("a character");
                        value.push(c);
                        i += c.len_utf8();
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                if bytes[i] == b'\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                let c = s[i..].chars().next().expect("a character");
                value.push(c);
                i += c.len_utf8();
            }
        }
        if !take(&mut params, key, value)? {
            kept.push(&s[start..i]);
        }
    }
    Ok((kept.join(" "), params))
}

fn percent_decode(s: &str) -> Result<String, TlsError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(TlsError::Malformed("a bad %-escape in the query"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| TlsError::Malformed("a %-escape that is not UTF-8"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> ConnectOptions {
        ConnectOptions::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    fn error(url: &str) -> String {
        match ConnectOptions::parse(url) {
            Ok(o) => panic!("{url} parsed: {o:?}"),
            Err(e) => e.to_string(),
        }
    }

    const BASE: &str = "postgres://u:secret@db.example:6543/app";

    #[test]
    fn every_sslmode_parses_and_is_stripped() {
        for mode in SslMode::ALL {
            let root = if mode.verifies() {
                "&sslrootcert=/ca.pem"
            } else {
                ""
            };
            let o = parse(&format!("{BASE}?sslmode={mode}{root}"));
            assert_eq!(o.tls.mode(), mode);
            assert_eq!(o.config.get_user(), Some("u"));
            assert_eq!(o.config.get_dbname(), Some("app"));
            assert_eq!(o.config.get_ports(), [6543]);
        }
    }

    #[test]
    fn absent_sslmode_is_prefer() {
        let o = parse(BASE);
        assert_eq!(o.tls, TlsSettings::default());
        assert_eq!(o.tls.effective_mode(), SslMode::Prefer);
        assert_eq!(o.pg_config().get_ssl_mode(), PgSslMode::Prefer);
    }

    #[test]
    fn modes_map_onto_tokio_postgres() {
        let pg = |url: &str| parse(url).pg_config().get_ssl_mode();
        assert_eq!(pg(&format!("{BASE}?sslmode=disable")), PgSslMode::Disable);
        assert_eq!(pg(&format!("{BASE}?sslmode=require")), PgSslMode::Require);
        assert_eq!(
            pg(&format!("{BASE}?sslmode=verify-ca&sslrootcert=/c")),
            PgSslMode::Require
        );
        assert_eq!(
            pg(&format!("{BASE}?sslmode=verify-full&sslrootcert=/c")),
            PgSslMode::Require
        );
    }

    #[test]
    fn require_with_a_root_cert_verifies_the_chain_as_libpq_does() {
        let o = parse(&format!("{BASE}?sslmode=require&sslrootcert=/ca.pem"));
        assert_eq!(o.tls.mode(), SslMode::Require);
        assert_eq!(o.tls.effective_mode(), SslMode::VerifyCa);
        let plain = parse(&format!("{BASE}?sslmode=require"));
        assert_eq!(plain.tls.effective_mode(), SslMode::Require);
    }

    #[test]
    fn sslrootcert_file_and_system() {
        let o = parse(&format!(
            "{BASE}?sslmode=verify-full&sslrootcert=%2Fetc%2Fpg%20certs%2Fca.pem"
        ));
        assert_eq!(
            o.tls.root_cert(),
            Some(&RootCert::File("/etc/pg certs/ca.pem".into()))
        );
        let o = parse(&format!("{BASE}?sslrootcert=system"));
        assert_eq!(o.tls.root_cert(), Some(&RootCert::System));
        assert_eq!(
            o.tls.mode(),
            SslMode::VerifyFull,
            "libpq's default with system"
        );
        let o = parse(&format!("{BASE}?sslrootcert=system&sslmode=verify-full"));
        assert_eq!(o.tls.mode(), SslMode::VerifyFull);
    }

    #[test]
    fn other_parameters_go_to_tokio_postgres() {
        let o = parse(&format!(
            "{BASE}?application_name=x&sslmode=verify-full&connect_timeout=7&sslrootcert=/c&channel_binding=require"
        ));
        assert_eq!(o.config.get_application_name(), Some("x"));
        assert_eq!(
            o.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
        assert_eq!(
            o.config.get_channel_binding(),
            tokio_postgres::config::ChannelBinding::Require
        );
        let (rest, _) = split_tls_params(&format!(
            "{BASE}?application_name=x&sslmode=disable&connect_timeout=7"
        ))
        .unwrap();
        assert_eq!(rest, format!("{BASE}?application_name=x&connect_timeout=7"));
        let (rest, _) = split_tls_params(&format!("{BASE}?sslmode=disable")).unwrap();
        assert_eq!(rest, BASE);
    }

    #[test]
    fn client_certificate_needs_cert_and_key() {
        let o = parse(&format!("{BASE}?sslcert=/c.pem&sslkey=/k.pem"));
        assert_eq!(
            o.tls.client_cert(),
            Some(&ClientCert {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert!(
            error(&format!("{BASE}?sslcert=/c.pem")).contains("sslcert is given without sslkey")
        );
        assert!(error(&format!("{BASE}?sslkey=/k.pem")).contains("sslkey is given without sslcert"));
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = error(&format!("{BASE}?sslmode=verify_full"));
        assert!(e.contains("invalid sslmode \"verify_full\""), "{e}");
        assert!(e.contains("verify-full"), "{e}");
        let e = error(&format!("{BASE}?sslmode=verify-full"));
        assert!(e.contains("sslmode=verify-full needs sslrootcert"), "{e}");
        let e = error(&format!("{BASE}?sslmode=verify-ca"));
        assert!(e.contains("sslmode=verify-ca needs sslrootcert"), "{e}");
        let e = error(&format!("{BASE}?sslmode=require&sslrootcert=system"));
        assert!(
            e.contains("sslrootcert=system needs sslmode=verify-full"),
            "{e}"
        );
        let e = error(&format!("{BASE}?sslmode=verify-ca&sslrootcert=system"));
        assert!(e.contains("got sslmode=verify-ca"), "{e}");
        assert!(error(&format!("{BASE}?sslrootcert=")).contains("sslrootcert is empty"));
        assert!(error(&format!("{BASE}?sslmode=")).contains("sslmode is empty"));
        let e = error(&format!("{BASE}?sslmode=disable&sslmode=require"));
        assert!(e.contains("sslmode is given more than once"), "{e}");
        let e = error(&format!("{BASE}?sslcrl=/crl.pem"));
        assert!(e.contains("sslcrl is not supported"), "{e}");
        let e = error(&format!("{BASE}?sslrootcert=%zz"));
        assert!(e.contains("%-escape"), "{e}");
        for e in [
            error(&format!("{BASE}?sslmode=bogus")),
            error(&format!("{BASE}?nonsense=1")),
        ] {
            assert!(!e.contains("secret"), "an error repeats the password: {e}");
        }
    }

    #[test]
    fn key_value_strings_too() {
        let o = parse(
            "host=db.example port=6543 user=u password='it\\'s' dbname=app sslmode=verify-full sslrootcert='/my certs/ca.pem'",
        );
        assert_eq!(o.tls.mode(), SslMode::VerifyFull);
        assert_eq!(
            o.tls.root_cert(),
            Some(&RootCert::File("/my certs/ca.pem".into()))
        );
        assert_eq!(o.config.get_dbname(), Some("app"));
        let (rest, _) = split_tls_params("host=h sslmode = disable  user=u").unwrap();
        assert_eq!(rest, "host=h user=u");
        let (rest, tls) = split_tls_params(r"host=h sslrootcert=/a\ b sslmode=verify-ca").unwrap();
        assert_eq!(rest, "host=h");
        assert_eq!(tls.root_cert(), Some(&RootCert::File("/a b".into())));
        assert!(ConnectOptions::parse("host=h sslmode").is_err());
        assert!(ConnectOptions::parse("host=h sslrootcert='/x").is_err());
    }

    #[test]
    fn url_params_round_trip() {
        let o = parse(&format!(
            "{BASE}?sslmode=verify-ca&sslrootcert=/a%20b/ca.pem&sslcert=/c&sslkey=/k"
        ));
        let again = parse(&format!("{BASE}?{}", o.tls.url_params()));
        assert_eq!(again.tls, o.tls);
    }

    #[test]
    fn hosts_inherit_what_they_do_not_set() {
        let url = parse(&format!(
            "{BASE}?sslmode=verify-full&sslrootcert=/ca.pem&sslcert=/c&sslkey=/k"
        ))
        .tls;
        let inherited = url.for_host(&HostTls::default()).unwrap();
        assert_eq!(inherited, url.without_client_cert());
        let own = url
            .for_host(&HostTls {
                sslmode: Some(SslMode::VerifyCa),
                sslrootcert: Some(RootCert::File("/other.pem".into())),
            })
            .unwrap();
        assert_eq!(own.effective_mode(), SslMode::VerifyCa);
        assert_eq!(own.root_cert(), Some(&RootCert::File("/other.pem".into())));
        let system = TlsSettings::default()
            .for_host(&HostTls {
                sslmode: None,
                sslrootcert: Some(RootCert::System),
            })
            .unwrap();
        assert_eq!(system.mode(), SslMode::VerifyFull);
        let e = TlsSettings::default()
            .for_host(&HostTls {
                sslmode: Some(SslMode::VerifyFull),
                sslrootcert: None,
            })
            .unwrap_err();
        assert!(matches!(e, TlsError::NoRootCert(SslMode::VerifyFull)));
        assert!(HostTls::from_columns(Some("nope"), None).is_err());
        assert_eq!(
            HostTls::from_columns(Some("verify-ca"), Some("system")).unwrap(),
            HostTls {
                sslmode: Some(SslMode::VerifyCa),
                sslrootcert: Some(RootCert::System)
            }
        );
    }

    #[test]
    fn missing_or_empty_ca_files_are_named() {
        let tls =
            TlsSettings::from_params(Some("verify-full"), Some("/nonexistent/ca.pem"), None, None)
                .unwrap();
        let e = tls.connector().unwrap_err().to_string();
        assert!(
            e.contains("cannot read sslrootcert /nonexistent/ca.pem"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("tp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let tls = TlsSettings::from_params(Some("verify-ca"), empty.to_str(), None, None).unwrap();
        let e = tls.connector().unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        // Modes that verify nothing read no file.
        let tls =
            TlsSettings::from_params(Some("prefer"), Some("/nonexistent"), None, None).unwrap();
        assert!(tls.connector().is_ok());
    }
}
