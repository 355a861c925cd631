use deadpool_postgres::PoolError;

/// Failures talking to the control-plane database.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("control-plane database query failed: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("no connection to the control-plane database: {0}")]
    Pool(#[from] PoolError),
}

impl RegistryError {
    /// True when the database could not be reached at all (connection refused,
    /// dropped, timed out, shutting down) as opposed to a query that the
    /// server rejected. Callers answer the first with 503 so the sender retries.
    pub fn is_unavailable(&self) -> bool {
        match self {
            RegistryError::Pool(_) => true,
            RegistryError::Db(e) => db_error_is_unavailable(e),
        }
    }
}

pub(crate) fn db_error_is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exception; 57P01..57P03: admin shutdown,
        // crash shutdown, cannot connect now.
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        // No SQLSTATE at all means the error came from the socket, not the server.
        None => true,
    }
}
