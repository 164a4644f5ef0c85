//! Deploy logs: every line is stored, then fanned out to live subscribers
//! (WebSocket streams) over a per-service broadcast channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shared::api::{LogEvent, ServiceStatus};
use tokio::sync::broadcast;

use crate::control::store::{Store, StoreError};

#[derive(Clone)]
pub struct LogBus {
    store: Store,
    channels: Arc<Mutex<HashMap<String, broadcast::Sender<LogEvent>>>>,
}

impl LogBus {
    pub fn new(store: Store) -> LogBus {
        LogBus {
            store,
            channels: Arc::default(),
        }
    }

    fn sender(&self, service: &str) -> broadcast::Sender<LogEvent> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(service.to_string())
            .or_insert_with(|| broadcast::channel(1024).0)
            .clone()
    }

    /// Subscribe before reading the stored log, so no line falls in between.
    pub fn subscribe(&self, service: &str) -> broadcast::Receiver<LogEvent> {
        self.sender(service).subscribe()
    }

    pub async fn line(
        &self,
        service: &str,
        job_id: Option<i64>,
        line: &str,
    ) -> Result<(), StoreError> {
        let stored = self.store.append_log(service, job_id, line).await?;
        tracing::info!(service, "{line}");
        // No receivers is fine: nobody is watching.
        let _ = self.sender(service).send(LogEvent::Line(stored));
        Ok(())
    }

    pub fn end(&self, service: &str, status: ServiceStatus, message: Option<String>) {
        let _ = self.sender(service).send(LogEvent::End { status, message });
    }
}
