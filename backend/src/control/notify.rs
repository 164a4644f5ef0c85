//! Wake-ups across nodes that share a PostgreSQL, through its
//! LISTEN/NOTIFY: a queued deploy job wakes every node's idle workers at
//! once (rather than at their next poll), and log lines reach followers
//! connected to other nodes (`LogBus::relay`), and a placement change wakes
//! every node's reconciler (`deploy::placement`). Notifications are transient:
//! what they point at is always read back from the store.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::control::logbus::LogBus;
use crate::control::store::{JOB_CHANNEL, LOG_CHANNEL, PLACE_CHANNEL};

/// Listens on both channels for as long as the server runs, connecting
/// again (a second apart) whenever the connection is lost.
pub fn spawn_listener(
    url: String,
    logs: LogBus,
    jobs_ready: Arc<tokio::sync::Notify>,
    placed: Arc<tokio::sync::Notify>,
) {
    tokio::spawn(async move {
        loop {
            if let Err(e) = listen(&url, &logs, &jobs_ready, &placed).await {
                tracing::warn!("listening for other nodes' notifications: {e}");
            }
            // Jobs queued, instances placed while we were not listening:
            // look now.
            jobs_ready.notify_waiters();
            placed.notify_one();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

async fn listen(
    url: &str,
    logs: &LogBus,
    jobs_ready: &tokio::sync::Notify,
    placed: &tokio::sync::Notify,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener
        .listen_all([JOB_CHANNEL, LOG_CHANNEL, PLACE_CHANNEL])
        .await?;
    // `None`: the connection was lost; return to reconnect.
    while let Some(note) = listener.try_recv().await? {
        match note.channel() {
            JOB_CHANNEL => jobs_ready.notify_waiters(),
            LOG_CHANNEL => logs.relay(note.payload()).await,
            PLACE_CHANNEL => placed.notify_one(),
            _ => {}
        }
    }
    Ok(())
}
