//! The envelope of Clerk's list endpoints.

use serde::Deserialize;

/// One page of a list endpoint: `{"data": [...], "total_count": N}`, where
/// `total_count` counts every item, not only this page's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub total_count: u64,
}
