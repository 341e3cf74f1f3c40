//! The desired-state document (`GET /api/v1/desired`), built once per configuration
//! revision and shared by every poller: a commit wakes every waiting engine at once, and
//! each would otherwise read and serialize the whole configuration for itself.

use std::sync::Arc;

use axum::body::Bytes;

use crate::error::ApiError;
use crate::store::{Store, StoreError};
use crate::types::Desired;

/// One revision's document.
#[derive(Debug)]
pub struct Document {
    /// The configuration revision.
    pub revision: u64,
    /// `Desired` as JSON.
    pub body: Bytes,
    /// Servers in the configuration, over all pools.
    pub servers: usize,
    /// The most servers an engine may report: the largest configuration since the
    /// controller started (an engine may still run an older, larger one).
    pub report_bound: usize,
}

/// The newest document built.
#[derive(Debug, Default)]
pub struct DesiredCache {
    // An async lock, held while a document is built: the pollers a commit wakes wait for
    // the one build instead of each starting its own.
    newest: tokio::sync::Mutex<Option<Arc<Document>>>,
}

impl DesiredCache {
    /// The document of revision `revision` or a newer one.
    pub async fn at_least(
        &self,
        store: &Arc<Store>,
        revision: u64,
    ) -> Result<Arc<Document>, ApiError> {
        let mut newest = self.newest.lock().await;
        if let Some(doc) = newest.as_ref().filter(|d| d.revision >= revision) {
            return Ok(Arc::clone(doc));
        }
        let store = Arc::clone(store);
        let mut doc = tokio::task::spawn_blocking(move || build(&store))
            .await
            .map_err(|e| ApiError::internal("a store task failed", &e))??;
        doc.report_bound = newest
            .as_ref()
            .map_or(doc.servers, |old| old.report_bound.max(doc.servers));
        let doc = Arc::new(doc);
        *newest = Some(Arc::clone(&doc));
        Ok(doc)
    }
}

fn build(store: &Store) -> Result<Document, StoreError> {
    let snap = store.snapshot()?;
    let servers = snap.config.pools.iter().map(|p| p.servers.len()).sum();
    let desired = Desired {
        revision: snap.config_revision,
        config: snap.config,
    };
    let body = serde_json::to_vec(&desired).expect("the configuration serializes");
    Ok(Document {
        revision: desired.revision,
        body: Bytes::from(body),
        servers,
        report_bound: servers,
    })
}
