//! The TLS handshake: rustls connectors for tokio-postgres, certificate
//! verification as libpq's sslmode asks, and handshake errors that name
//! the host and the reason.

use super::*;

/// tokio-postgres's TLS connector for one [`TlsSettings`]: rustls, with
/// channel binding (tls-server-end-point), and handshake errors that name
/// the host and say what was wrong with its certificate.
#[derive(Clone)]
pub struct TlsConnector {
    pub(super) inner: MakeRustlsConnect,
    pub(super) mode: SslMode,
    pub(super) trust: Option<Arc<str>>,
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
pub(super) fn presented_name(name: &str) -> &str {
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
pub(super) struct Verifier {
    pub(super) roots: Option<Arc<RootCertStore>>,
    pub(super) check_name: bool,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
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

pub(super) fn load_roots(root: &RootCert) -> Result<Arc<RootCertStore>, TlsError> {
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
pub(super) fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
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

pub(super) fn read_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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

pub(super) fn load_client_cert(
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
