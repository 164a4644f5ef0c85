//! Deploy logs: every line is stored, then fanned out to live subscribers
//! (WebSocket streams) over a per-service broadcast channel. Nodes that
//! share a PostgreSQL also tell each other (`control::notify`): a follower
//! connected to one node sees the lines of a deploy another node runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use shared::api::{LogEvent, ServiceStatus};
use tokio::sync::broadcast;

use crate::control::store::{retry_transient, Dialect, Store, StoreError, LOG_CHANNEL};

#[derive(Clone)]
pub struct LogBus {
    store: Store,
    /// This node's id: notes from it are not fanned out twice.
    node: String,
    channels: Arc<Mutex<HashMap<String, broadcast::Sender<LogEvent>>>>,
    /// Per service, the last line id relayed from another node: the next
    /// note relays everything after it, so a note lost while the listener
    /// reconnected is made up for by the one after.
    relayed: Arc<Mutex<HashMap<String, i64>>>,
}

/// What one node tells the others about a log (a NOTIFY payload, under
/// PostgreSQL's 8000-byte limit: lines are read back from the store).
#[derive(Debug, Serialize, Deserialize)]
struct Note {
    node: String,
    service: String,
    #[serde(flatten)]
    what: What,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum What {
    /// The stored line with this id.
    Line(i64),
    End {
        status: ServiceStatus,
        message: Option<String>,
    },
}

/// How long a line waits for a database that cannot be reached (restarting,
/// failing over) before the deploy that writes it fails.
const RETRY_BUDGET: std::time::Duration = std::time::Duration::from_secs(30);

/// A message longer than this is cut in the note (the store keeps it whole).
const NOTE_MESSAGE_CHARS: usize = 2000;

impl LogBus {
    pub fn new(store: Store, node: String) -> LogBus {
        LogBus {
            store,
            node,
            channels: Arc::default(),
            relayed: Arc::default(),
        }
    }

    fn sender(&self, service: &str) -> broadcast::Sender<LogEvent> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(service.to_string())
            .or_insert_with(|| broadcast::channel(1024).0)
            .clone()
    }

    fn watched(&self, service: &str) -> bool {
        let map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        map.get(service).is_some_and(|s| s.receiver_count() > 0)
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
        // A lost connection almost always means the insert did not commit;
        // at worst (lost between commit and answer) a line shows twice.
        let stored = retry_transient(RETRY_BUDGET, || {
            self.store.append_log(service, job_id, line)
        })
        .await?;
        tracing::info!(service, "{line}");
        let Some(stored) = stored else {
            tracing::warn!(service, job = ?job_id, "a log line of a deleted job dropped");
            return Ok(());
        };
        let id = stored.id;
        // No receivers is fine: nobody is watching.
        let _ = self.sender(service).send(LogEvent::Line(stored));
        self.tell(service, What::Line(id)).await;
        Ok(())
    }

    pub fn end(&self, service: &str, status: ServiceStatus, message: Option<String>) {
        let _ = self.sender(service).send(LogEvent::End {
            status,
            message: message.clone(),
        });
        if self.store.dialect() == Dialect::Postgres {
            let (bus, service) = (self.clone(), service.to_string());
            let message = message.map(|m| m.chars().take(NOTE_MESSAGE_CHARS).collect());
            tokio::spawn(async move { bus.tell(&service, What::End { status, message }).await });
        }
    }

    /// Tells the other nodes; a failure costs their followers this line
    /// (it is stored), not the deploy.
    async fn tell(&self, service: &str, what: What) {
        if self.store.dialect() != Dialect::Postgres {
            return;
        }
        let note = Note {
            node: self.node.clone(),
            service: service.to_string(),
            what,
        };
        let sent = match serde_json::to_string(&note) {
            Ok(payload) => self.store.notify(LOG_CHANNEL, &payload).await,
            Err(e) => Err(StoreError::Corrupt(e.to_string())),
        };
        if let Err(e) = sent {
            tracing::warn!(service, "telling other nodes about a log line: {e}");
        }
    }

    /// A note from another node: relays what it says to this node's
    /// followers of that service, if any.
    pub async fn relay(&self, payload: &str) {
        let note: Note = match serde_json::from_str(payload) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("an unreadable log note from another node: {e}");
                return;
            }
        };
        if note.node == self.node {
            return;
        }
        let service = note.service.as_str();
        if !self.watched(service) {
            self.relayed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(service);
            return;
        }
        match note.what {
            What::Line(id) => {
                let after = {
                    let map = self.relayed.lock().unwrap_or_else(|p| p.into_inner());
                    map.get(service).copied().unwrap_or(id - 1).min(id - 1)
                };
                let lines = match self.store.logs_after(service, after, 1000).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(service, "reading another node's log lines: {e}");
                        return;
                    }
                };
                let sender = self.sender(service);
                let mut last = after;
                for line in lines {
                    last = last.max(line.id);
                    let _ = sender.send(LogEvent::Line(line));
                }
                self.relayed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(service.to_string(), last);
            }
            What::End { status, message } => {
                self.relayed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(service);
                let _ = self.sender(service).send(LogEvent::End { status, message });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_stay_small_and_read_back() {
        let note = Note {
            node: "host-1-abcd".into(),
            service: "svc".into(),
            what: What::End {
                status: ServiceStatus::Failed,
                message: Some("x".repeat(NOTE_MESSAGE_CHARS)),
            },
        };
        let text = serde_json::to_string(&note).unwrap();
        assert!(text.len() < 8000, "{}", text.len());
        let back: Note = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            back.what,
            What::End {
                status: ServiceStatus::Failed,
                ..
            }
        ));
        let line: Note = serde_json::from_str(r#"{"node":"a","service":"s","line":7}"#).unwrap();
        assert!(matches!(line.what, What::Line(7)));
    }
}
