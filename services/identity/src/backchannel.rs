//! Back-Channel Logout 1.0 delivery: the relay that drains the outbox and
//! posts signed logout tokens to clients, retrying with backoff until each
//! is delivered, or given up (its client removed, or a day of failures).

use std::sync::Arc;
use std::time::Duration;

use civichub_store::{Outbox, OutboxMessage, backoff_secs};

use crate::sessions::{BACKCHANNEL_TOPIC, BackchannelLogout};
use crate::{Error, Identity, Result, oidc};

/// Attempts before a notice is given up: with the backoff capped at ten
/// minutes, about a day of trying.
const MAX_ATTEMPTS: i64 = 150;

/// Runs until the process ends: delivers due notices, then sleeps until
/// woken (a logout on this node) or for a second (work from other nodes,
/// retries).
pub async fn relay(id: Arc<Identity>) {
    let outbox = Outbox::new(id.db.clone());
    loop {
        match outbox.claim(BACKCHANNEL_TOPIC, 32, 30).await {
            Ok(batch) => {
                // Deliver concurrently: one slow client must not hold up the others.
                let mut deliveries = tokio::task::JoinSet::new();
                for message in batch {
                    let (id, outbox) = (id.clone(), outbox.clone());
                    deliveries.spawn(async move { deliver(&id, &outbox, message).await });
                }
                while deliveries.join_next().await.is_some() {}
            }
            Err(e) => tracing::warn!("claiming back-channel logout notices: {e}"),
        }
        tokio::select! {
            _ = id.backchannel_wakeup.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn deliver(id: &Identity, outbox: &Outbox, message: OutboxMessage) {
    let outcome = async {
        let notice: BackchannelLogout = message.payload()?;
        send(id, &notice).await
    }
    .await;
    let recorded = match outcome {
        Ok(()) => outbox.delivered(&message.id).await,
        // The client was removed or the notice cannot be read (no retry helps),
        // or a day of retries did not.
        Err(e) if matches!(e, Error::NotFound(_) | Error::Corrupt(_)) || message.attempts >= MAX_ATTEMPTS => {
            tracing::warn!("back-channel logout {} given up after {} attempts: {e}", message.id, message.attempts);
            outbox.dead(&message.id, &e.to_string()).await
        }
        Err(e) => {
            tracing::info!("back-channel logout {} not delivered (attempt {}): {e}", message.id, message.attempts);
            outbox.retry_later(&message.id, &e.to_string(), backoff_secs(message.attempts)).await
        }
    };
    if let Err(e) = recorded {
        tracing::warn!("recording back-channel logout outcome: {e}");
    }
}

async fn send(id: &Identity, notice: &BackchannelLogout) -> Result<()> {
    let client = id
        .clients
        .get(&notice.client_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("client {}", notice.client_id)))?;
    let key = id.keys.signing_key(client.signing_alg()).await?;
    let token = oidc::logout_token(&id.settings, &key, &notice.client_id, &notice.sub, &notice.sid)?;
    let response = id
        .http
        .post(&notice.uri)
        .form(&[("logout_token", token)])
        .send()
        .await
        .map_err(|e| Error::Invalid(format!("POST {}: {e}", notice.uri)))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(Error::Invalid(format!("POST {} answered {}", notice.uri, response.status())))
    }
}
