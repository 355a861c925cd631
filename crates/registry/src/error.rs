use deadpool_postgres::PoolError;

/// The useful text of a PostgreSQL error. `tokio_postgres::Error` displays
/// as just "db error" and keeps the server's message in its source; operators
/// need the message (and SQLSTATE) itself.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    with_sources(e)
}

/// An error and its causes, as one line: many errors' own text leaves out
/// why (a refused redirect, a TLS failure, a socket error).
pub fn with_sources(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Failures talking to the control-plane database.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("control-plane database query failed: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("no connection to the control-plane database: {0}")]
    Pool(#[from] PoolError),
    /// A row that the schema's constraints should have kept out: read, but
    /// refused rather than guessed at.
    #[error("{table} row {id} is inconsistent: {detail}")]
    Corrupt {
        table: &'static str,
        id: String,
        detail: String,
    },
}

impl RegistryError {
    /// True when the database could not be reached at all (connection refused,
    /// dropped, timed out, shutting down) as opposed to a query that the
    /// server rejected. Callers answer the first with 503 so the sender retries.
    pub fn is_unavailable(&self) -> bool {
        match self {
            RegistryError::Pool(_) => true,
            RegistryError::Db(e) => db_error_is_unavailable(e),
            RegistryError::Corrupt { .. } => false,
        }
    }
}

/// True for errors of the connection rather than of the statement.
pub fn db_error_is_unavailable(e: &tokio_postgres::Error) -> bool {
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
