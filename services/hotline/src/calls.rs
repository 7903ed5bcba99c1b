//! Calls from the call centre (`civichub.fusion.call.*`): when an agent
//! answers, the workbench shows the caller and pre-fills the ticket form.

use std::sync::Arc;

use async_trait::async_trait;
use civichub_fusion::{CallEvent, CallEventKind};
use civichub_messaging::{Bus, Consumer, Envelope, Handler, Outcome};
use civichub_store::Row;

use crate::Tickets;

/// An answered call is shown for at most this long.
const CALL_SHOWN_MS: i64 = 60 * 60_000;

/// Records which agent is on which call.
#[derive(Debug)]
pub struct Calls {
    tickets: Arc<Tickets>,
}

/// The call an agent is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentCall {
    /// The call centre's id.
    pub call_id: String,
    /// The caller's number.
    pub caller: String,
}

impl Calls {
    /// Registers the call consumer on `bus` (before the bus starts).
    pub fn register(bus: &Bus, tickets: Arc<Tickets>) {
        bus.register(Consumer::new("hotline-calls", "civichub.fusion.call.>", Arc::new(Calls { tickets })));
    }
}

#[async_trait]
impl Handler for Calls {
    async fn handle(&self, env: &Envelope, _delivery: u32) -> Outcome {
        let event = match CallEvent::try_from(env.payload.clone()) {
            Ok(e) => e,
            Err(e) => return Outcome::reject(format!("not a call event: {e}")),
        };
        let Some(agent) = event.agent.clone().filter(|a| !a.is_empty()) else {
            // A hangup may not say whose call it was: the call ends all the same.
            if event.event == CallEventKind::Hangup {
                return match self.tickets.end_call(&event.call_id).await {
                    Ok(()) => Outcome::Ack,
                    Err(e) => Outcome::retry(e.to_string()),
                };
            }
            return Outcome::Ack;
        };
        let state = match event.event {
            CallEventKind::NewCall => return Outcome::Ack,
            CallEventKind::Answer => "answered",
            CallEventKind::Hangup => "ended",
        };
        match self.tickets.record_call(&event.call_id, &agent, &event.from, state).await {
            Ok(()) => Outcome::Ack,
            Err(e) => Outcome::retry(e.to_string()),
        }
    }
}

impl Tickets {
    /// Notes that `agent` answered (or ended) call `call_id` from `caller`.
    pub async fn record_call(&self, call_id: &str, agent: &str, caller: &str, state: &str) -> crate::Result<()> {
        let sealed = self.seal(caller)?;
        let now = civichub_messaging::now_ms();
        let mut tx = self.db().begin().await?;
        sqlx::query(
            "INSERT INTO hotline_calls (call_id, agent, caller, state, at_ms) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (call_id) DO UPDATE SET agent = excluded.agent, state = excluded.state, at_ms = excluded.at_ms \
             WHERE hotline_calls.state <> 'ended'",
        )
        .bind(call_id)
        .bind(agent)
        .bind(sealed)
        .bind(state)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends call `call_id`, whoever took it.
    pub async fn end_call(&self, call_id: &str) -> crate::Result<()> {
        let mut tx = self.db().begin().await?;
        sqlx::query("UPDATE hotline_calls SET state = 'ended', at_ms = $2 WHERE call_id = $1 AND state <> 'ended'")
            .bind(call_id)
            .bind(civichub_messaging::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Forgets the calls last heard of more than `CALL_SHOWN_MS` before `now`:
    /// the workbench shows none of them, and each holds a caller's number.
    /// Returns how many went.
    pub async fn forget_calls(&self, now: i64) -> crate::Result<u64> {
        let before = now - CALL_SHOWN_MS;
        // A read first: with nothing to forget, the sweep does not take the writer.
        if sqlx::query("SELECT 1 FROM hotline_calls WHERE at_ms < $1 LIMIT 1").bind(before).fetch_optional(self.db().pool()).await?.is_none() {
            return Ok(0);
        }
        let mut tx = self.db().begin().await?;
        let gone = sqlx::query("DELETE FROM hotline_calls WHERE at_ms < $1").bind(before).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(gone)
    }

    /// The call `agent` answered last and has not hung up, if recent.
    pub async fn current_call(&self, agent: &str) -> crate::Result<Option<CurrentCall>> {
        let row = sqlx::query(
            "SELECT call_id, caller, state FROM hotline_calls WHERE agent = $1 AND at_ms > $2 ORDER BY at_ms DESC LIMIT 1",
        )
        .bind(agent)
        .bind(civichub_messaging::now_ms() - CALL_SHOWN_MS)
        .fetch_optional(self.db().pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        if row.try_get::<String, _>("state")? != "answered" {
            return Ok(None);
        }
        Ok(Some(CurrentCall { call_id: row.try_get("call_id")?, caller: self.open(&row.try_get::<String, _>("caller")?)? }))
    }
}
