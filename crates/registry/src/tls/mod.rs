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
    /// The server accepted the connection but did not finish the startup
    /// handshake (TLS, authentication) in time: a hung server, or a dead path.
    #[error("cannot connect to {target}: no answer within {}s (TCP, TLS and authentication)", .after.as_secs_f64())]
    Timeout {
        target: String,
        after: std::time::Duration,
    },
}

impl ConnectError {
    /// The driver's error, when the connection attempt was made.
    pub fn db_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            ConnectError::Connect { source, .. } => Some(source),
            ConnectError::Settings(_) | ConnectError::Timeout { .. } => None,
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
    /// Connects; the whole of it (TCP, TLS, authentication) is bounded by
    /// the config's connect timeout, which tokio-postgres applies to the TCP
    /// connect alone: a server that accepts and never answers must not hang
    /// the caller.
    pub async fn connect(&self) -> Result<(Client, Connection), ConnectError> {
        let connector = self.tls.connector()?;
        let config = self.pg_config();
        let after = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_DEADLINE);
        match tokio::time::timeout(after, config.connect(connector)).await {
            Ok(connected) => connected.map_err(|source| ConnectError::Connect {
                target: self.target(),
                source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                target: self.target(),
                after,
            }),
        }
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

/// The bound on a whole connection attempt when the config sets none.
const DEFAULT_CONNECT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

mod handshake;
mod params;
#[cfg(test)]
mod tests;

use handshake::*;
pub use params::*;
