//! A tenant's connection credentials: where its database is, how to reach
//! it (TLS), and its role's password, opened from the sealed form.

use model::{PgIdent, TenantId};

use crate::crypto::{CryptoError, PasswordCipher};
use crate::tenants::{Tenant, MODEL_LOGIN_OWNS_NOTHING};
use crate::tls::{ConnectOptions, TlsError, TlsSettings};

/// How to connect to a tenant's database as the tenant's own role.
#[derive(Clone)]
pub struct TenantCredentials {
    pub host: String,
    pub port: u16,
    pub dbname: PgIdent,
    pub role: PgIdent,
    pub password: String,
    /// The host's TLS settings (its own, else database.url's), without
    /// database.url's client certificate: tenant roles log in by password.
    pub tls: TlsSettings,
}

impl TenantCredentials {
    /// Where and how to connect as the tenant's role.
    pub fn connect_options(&self) -> ConnectOptions {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(self.role.as_str())
            .password(&self.password)
            .dbname(self.dbname.as_str());
        ConnectOptions::new(config, self.tls.clone())
    }
}

impl std::fmt::Debug for TenantCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCredentials")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("role", &self.role)
            .field("password", &"[redacted]")
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("tenant {0} has no database yet")]
    NotPlaced(TenantId),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Why [`credentials`] could not tell how to reach a tenant's database.
#[derive(Debug, thiserror::Error)]
pub enum TenantCredentialsError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The host's TLS settings, over database.url's, do not make sense
    /// (e.g. verify-full without any sslrootcert).
    #[error("TLS settings of db host {host:?}: {source}")]
    Tls {
        host: String,
        #[source]
        source: TlsError,
    },
}

/// The tenant's connection parameters, with its password decrypted. No
/// query: the tenant row carries its host's address and TLS settings;
/// `tls_defaults` (database.url's) fill in what the host leaves unset.
pub fn credentials(
    cipher: &PasswordCipher,
    tenant: &Tenant,
    tls_defaults: &TlsSettings,
) -> Result<TenantCredentials, TenantCredentialsError> {
    let Some(p) = &tenant.placement else {
        return Err(CredentialsError::NotPlaced(tenant.id).into());
    };
    Ok(TenantCredentials {
        host: p.address.clone(),
        port: p.port,
        dbname: p.database.clone(),
        role: p.role.clone(),
        password: password(cipher, tenant)?,
        tls: tls_defaults
            .for_host(&p.tls)
            .map_err(|source| TenantCredentialsError::Tls {
                host: p.host.clone(),
                source,
            })?,
    })
}

/// The tenant's role password, decrypted. A password sealed before sealing
/// was bound to the tenant opens only while the tenant is on the old
/// privilege model; the reconciler re-seals it when it upgrades the tenant.
pub fn password(cipher: &PasswordCipher, tenant: &Tenant) -> Result<String, CredentialsError> {
    let (Some(p), Some(sealed)) = (&tenant.placement, &tenant.db_password_enc) else {
        return Err(CredentialsError::NotPlaced(tenant.id));
    };
    match cipher.open(sealed, tenant.id, &p.role) {
        Err(_) if tenant.privilege_model < MODEL_LOGIN_OWNS_NOTHING => {
            Ok(cipher.open_unbound(sealed)?)
        }
        other => Ok(other?),
    }
}
