//! Unified message routing (融合通信): a message to a person or department
//! becomes send orders on channels, tried in turn until one delivers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use civichub_store::{Db, Row, Tx};
use serde::Serialize;
use serde_json::json;

use super::channel::{Channel, Order, SendError, Sent};
use super::request::{ChannelKind, MessageRequest, Recipient};
use crate::envelope::now_ms;
use crate::{Bus, Consumer, Envelope, Error, Handler, Outcome, Result, outbox, subjects};

/// Routing settings.
#[derive(Clone, Debug)]
pub struct RouterSettings {
    /// Try the next channel when a sent message is not confirmed delivered by then.
    pub fallback_after: Duration,
    /// The same for urgent messages.
    pub urgent_fallback_after: Duration,
    /// Waits before redelivering a failed send order (the last repeats).
    pub retry_backoff: Vec<Duration>,
    /// Deliveries of a send order before it goes to the dead letters.
    pub max_deliver: u32,
    /// How long messages (with their attempts) and dead letters are kept
    /// after their last change; `None` keeps them.
    pub retention: Option<Duration>,
}

/// How often the retention sweep runs.
const RETENTION_SWEEP_EVERY: Duration = Duration::from_secs(3600);

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            fallback_after: Duration::from_secs(300),
            urgent_fallback_after: Duration::from_secs(60),
            retry_backoff: [1, 5, 15, 30, 60].into_iter().map(Duration::from_secs).collect(),
            max_deliver: 6,
            retention: Some(Duration::from_secs(180 * 86_400)),
        }
    }
}

/// The message router of one hub node.
pub struct Router {
    bus: Bus,
    channels: HashMap<ChannelKind, Arc<dyn Channel>>,
    settings: RouterSettings,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("channels", &self.channels.keys().collect::<Vec<_>>()).finish()
    }
}

/// What `POST /api/messages` answers.
#[derive(Clone, Debug, Serialize)]
pub struct Accepted {
    /// The message id.
    pub id: String,
    /// Always `queued`.
    pub status: String,
}

/// A message as `GET /api/messages/{id}` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct MessageView {
    /// Id.
    pub id: String,
    /// `queued`, `sent`, `delivered`, `failed` or `dead`.
    pub status: String,
    /// `{"user": …}`, `{"phone": …}` or `{"department": …}`.
    pub to: serde_json::Value,
    /// The client that sent it.
    #[serde(skip)]
    pub client_id: Option<String>,
    /// The channel asked for (`auto` included).
    pub channel: String,
    /// Urgent.
    pub urgent: bool,
    /// Created, RFC 3339.
    pub created_at: String,
    /// Last change, RFC 3339.
    pub updated_at: String,
    /// Every channel tried, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// One channel tried for a message.
#[derive(Clone, Debug, Serialize)]
pub struct AttemptView {
    /// Channel.
    pub channel: String,
    /// Where to.
    pub address: String,
    /// `sending`, `retrying`, `sent`, `delivered`, `failed` or `dead`.
    pub state: String,
    /// Deliveries of the order so far.
    pub tries: i64,
    /// First try, RFC 3339.
    pub started_at: String,
    /// Settled, RFC 3339.
    pub finished_at: Option<String>,
    /// The gateway's id (first SMS segment, DingTalk task, call).
    pub gateway_id: Option<String>,
    /// The gateway's last word.
    pub outcome: Option<String>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// An order that has not settled after this long is taken over by another delivery.
const STALE_SENDING_MS: i64 = 60_000;

/// How long a node has to move one message on to its next channel before
/// another may (asking a gateway whether it delivered can take a while).
const FALLBACK_LEASE_MS: i64 = 120_000;

impl Router {
    /// A router on `bus` with no channels yet.
    pub fn new(bus: Bus, settings: RouterSettings) -> Router {
        Router { bus, channels: HashMap::new(), settings }
    }

    /// Adds a channel (replacing one of the same kind).
    pub fn add_channel(&mut self, channel: Arc<dyn Channel>) {
        self.channels.insert(channel.kind(), channel);
    }

    fn db(&self) -> &Db {
        self.bus.db()
    }

    /// The bus this router sends on.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Registers the senders of every configured channel and the SMS receipt
    /// consumer on the bus, and starts the fallback sweeper.
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        for kind in self.channels.keys() {
            let name = format!("{}-sender", kind.as_str());
            let mut consumer = Consumer::new(&name, kind.subject(), Arc::new(Sender { router: self.clone(), kind: *kind }));
            consumer.backoff = self.settings.retry_backoff.clone();
            consumer.max_deliver = self.settings.max_deliver;
            self.bus.register(consumer);
        }
        self.bus.register(Consumer::new("sms-receipts", subjects::SMS_RECEIPT, Arc::new(Receipts { router: self.clone() })));
        let router = self.clone();
        tokio::spawn(async move {
            let mut retention_swept: Option<std::time::Instant> = None;
            loop {
                if let Some(keep) = router.settings.retention
                    && retention_swept.is_none_or(|at| at.elapsed() >= RETENTION_SWEEP_EVERY)
                {
                    retention_swept = Some(std::time::Instant::now());
                    match router.sweep_retention(now_ms() - keep.as_millis() as i64).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("deleted {n} messages and dead letters past their retention"),
                        Err(e) => tracing::warn!("message retention sweep: {e}"),
                    }
                }
                match router.sweep_fallbacks().await {
                    Ok(n) if n > 0 => continue,
                    Ok(_) => {}
                    Err(e) => tracing::warn!("message fallback sweeper: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    /// The channels a request will try, in order, with addresses; and the
    /// voice call an urgent message also places.
    async fn plan(&self, req: &MessageRequest) -> Result<(Vec<(ChannelKind, String)>, Option<String>)> {
        let (phone, dingtalk): (Option<String>, Option<String>) = match &req.to {
            Recipient::Phone(p) => (Some(p.as_str().to_owned()), None),
            Recipient::Department(d) => (None, Some(format!("dept:{d}"))),
            Recipient::User(username) => {
                let row = sqlx::query(
                    "SELECT u.phone, u.disabled, l.subject AS dingtalk FROM users u \
                     LEFT JOIN user_links l ON l.user_id = u.id AND l.provider = 'dingtalk' WHERE u.username = $1",
                )
                .bind(username)
                .fetch_optional(self.db().pool())
                .await?
                .ok_or_else(|| Error::Invalid(format!("no user named {username:?}")))?;
                if row.try_get::<i64, _>("disabled")? != 0 {
                    return Err(Error::Invalid(format!("user {username:?} is disabled")));
                }
                (row.try_get::<Option<String>, _>("phone")?.filter(|p| !p.is_empty()), row.try_get("dingtalk")?)
            }
        };
        let configured = |k: ChannelKind| self.channels.contains_key(&k);
        let address = |k: ChannelKind| match k {
            ChannelKind::DingTalk => dingtalk.clone(),
            ChannelKind::Sms | ChannelKind::Voice => phone.clone(),
        };
        let plan: Vec<(ChannelKind, String)> = match req.channel {
            Some(kind) => {
                if !configured(kind) {
                    return Err(Error::Invalid(format!("channel {} is not configured on this hub", kind.as_str())));
                }
                let to = address(kind).ok_or_else(|| {
                    Error::Invalid(format!("the recipient ({}) cannot be reached by {}", req.to.kind(), kind.as_str()))
                })?;
                vec![(kind, to)]
            }
            None => [ChannelKind::DingTalk, ChannelKind::Sms]
                .into_iter()
                .filter(|k| configured(*k))
                .filter_map(|k| address(k).map(|a| (k, a)))
                .collect(),
        };
        if plan.is_empty() {
            return Err(Error::Invalid(format!("no configured channel reaches the recipient ({})", req.to.kind())));
        }
        let voice = if req.urgent && req.channel.is_none() && configured(ChannelKind::Voice) { phone } else { None };
        for kind in plan.iter().map(|(k, _)| *k).chain(voice.iter().map(|_| ChannelKind::Voice)) {
            let n = req.text.chars().count();
            if n > kind.max_chars() {
                return Err(Error::Invalid(format!("text is {n} characters; {} carries at most {}", kind.as_str(), kind.max_chars())));
            }
        }
        Ok((plan, voice))
    }

    fn fallback_after(&self, urgent: bool) -> i64 {
        let d = if urgent { self.settings.urgent_fallback_after } else { self.settings.fallback_after };
        d.as_millis() as i64
    }

    /// Accepts a message: stores it and its first send orders in one
    /// transaction; the bus does the rest.
    pub async fn submit(&self, req: MessageRequest, client_id: Option<&str>, trace_id: Option<&str>) -> Result<Accepted> {
        self.submit_as(crate::new_id(), false, req, client_id, trace_id).await
    }

    /// Like [`Router::submit`] with the message id given: a second request
    /// with the same id sends nothing and answers with the first one's
    /// status. For handlers that may see the same event twice.
    pub async fn submit_once(&self, id: &str, req: MessageRequest, client_id: Option<&str>, trace_id: Option<&str>) -> Result<Accepted> {
        self.submit_as(id.to_owned(), true, req, client_id, trace_id).await
    }

    async fn submit_as(&self, id: String, once: bool, req: MessageRequest, client_id: Option<&str>, trace_id: Option<&str>) -> Result<Accepted> {
        let (mut plan, voice) = self.plan(&req).await?;
        let client_id = client_id.map(str::to_owned);
        let trace = trace_id.unwrap_or(&id).to_owned();
        let (first, first_address) = plan.remove(0);
        let rest = encode_plan(&plan);
        let now = now_ms();
        // At this time the channel is asked whether it delivered, and the next one is tried if not.
        let fallback_at = Some(now + self.fallback_after(req.urgent));
        let urgent = req.urgent;
        let accepted = self
            .bus
            .writer()
            .write(move |tx| {
                Box::pin(async move {
                    if once
                        && let Some(row) = sqlx::query("SELECT status FROM messages WHERE id = $1").bind(&id).fetch_optional(&mut **tx).await?
                    {
                        return Ok::<_, Error>(Accepted { id: id.clone(), status: row.try_get("status")? });
                    }
                    tx.insert_later(
                        "INSERT INTO messages (id, recipient_kind, recipient, channel, text, template, params, urgent, status, plan, \
                         current_channel, fallback_at_ms, client_id, trace_id, created_ms, updated_ms)",
                        "",
                        vec![
                            id.as_str().into(),
                            req.to.kind().into(),
                            req.to.value().into(),
                            req.channel.map_or("auto", ChannelKind::as_str).into(),
                            req.text.as_str().into(),
                            req.template.clone().into(),
                            req.params.as_ref().map(|p| p.to_string()).into(),
                            (urgent as i64).into(),
                            "queued".into(),
                            rest.as_str().into(),
                            first.as_str().into(),
                            fallback_at.into(),
                            client_id.clone().into(),
                            trace.as_str().into(),
                            now.into(),
                            now.into(),
                        ],
                    );
                    let order = |kind: ChannelKind, address: String| Order {
                        message_id: id.clone(),
                        channel: kind.as_str().into(),
                        address,
                        text: req.text.clone(),
                        template: req.template.clone(),
                        params: req.params.clone(),
                    };
                    enqueue_order(tx, &order(first, first_address), &trace).await?;
                    if let Some(phone) = voice {
                        enqueue_order(tx, &order(ChannelKind::Voice, phone), &trace).await?;
                    }
                    Ok::<_, Error>(Accepted { id: id.clone(), status: "queued".into() })
                })
            })
            .await?;
        self.bus.kick();
        Ok(accepted)
    }

    /// A message with its attempts.
    pub async fn get(&self, id: &str) -> Result<MessageView> {
        let row = sqlx::query(
            "SELECT id, status, recipient_kind, recipient, channel, urgent, client_id, created_ms, updated_ms FROM messages WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.db().pool())
        .await?
        .ok_or(Error::NotFound)?;
        let attempts = sqlx::query(
            "SELECT channel, address, state, tries, started_ms, finished_ms, gateway_id, outcome FROM message_attempts \
             WHERE message_id = $1 ORDER BY started_ms, id",
        )
        .bind(id)
        .fetch_all(self.db().pool())
        .await?
        .iter()
        .map(|a| {
            Ok(AttemptView {
                channel: a.try_get("channel")?,
                address: a.try_get("address")?,
                state: a.try_get("state")?,
                tries: a.try_get("tries")?,
                started_at: rfc3339(a.try_get("started_ms")?),
                finished_at: a.try_get::<Option<i64>, _>("finished_ms")?.map(rfc3339),
                gateway_id: a.try_get("gateway_id")?,
                outcome: a.try_get("outcome")?,
            })
        })
        .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?;
        let kind: String = row.try_get("recipient_kind")?;
        let recipient: String = row.try_get("recipient")?;
        let to = if kind == "department" {
            json!({ kind: recipient.parse::<i64>().unwrap_or_default() })
        } else {
            json!({ kind: recipient })
        };
        Ok(MessageView {
            id: row.try_get("id")?,
            status: row.try_get("status")?,
            to,
            client_id: row.try_get("client_id")?,
            channel: row.try_get("channel")?,
            urgent: row.try_get::<i64, _>("urgent")? != 0,
            created_at: rfc3339(row.try_get("created_ms")?),
            updated_at: rfc3339(row.try_get("updated_ms")?),
            attempts,
        })
    }

    /// Takes the order for this delivery: `Ok(true)` to send now, `Ok(false)`
    /// when it already settled (a redelivery), `Err(outcome)` to come back later.
    async fn claim(&self, env: &Envelope, order: &Order) -> Result<std::result::Result<bool, Outcome>> {
        let (id, order) = (env.id.clone(), order.clone());
        let state: Option<(String, i64)> = self
            .bus
            .writer()
            .write(move |tx| {
                Box::pin(async move {
                    let now = now_ms();
                    // A new order, or one to send again: it was left retrying, or
                    // its sender went quiet (another node that died mid-send).
                    let taken = sqlx::query(
                        "INSERT INTO message_attempts (id, message_id, channel, address, state, tries, started_ms) \
                         VALUES ($1, $2, $3, $4, 'sending', 1, $5) ON CONFLICT (id) DO UPDATE \
                         SET state = 'sending', tries = message_attempts.tries + 1, started_ms = excluded.started_ms \
                         WHERE message_attempts.state = 'retrying' OR (message_attempts.state = 'sending' AND message_attempts.started_ms < $6)",
                    )
                    .bind(&id)
                    .bind(&order.message_id)
                    .bind(&order.channel)
                    .bind(&order.address)
                    .bind(now)
                    .bind(now - STALE_SENDING_MS)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                    if taken == 1 {
                        return Ok::<_, Error>(None);
                    }
                    let row = sqlx::query("SELECT state, started_ms FROM message_attempts WHERE id = $1").bind(&id).fetch_one(&mut **tx).await?;
                    Ok(Some((row.try_get::<String, _>("state")?, row.try_get::<i64, _>("started_ms")?)))
                })
            })
            .await?;
        Ok(match state {
            None => Ok(true),
            Some((state, started_ms)) if state == "sending" => {
                // Look again once that send would count as stale (its node died):
                // then this node takes it over. Never a reason to give up.
                let stale_in = (started_ms + STALE_SENDING_MS - now_ms()).clamp(1_000, STALE_SENDING_MS);
                Err(Outcome::Defer { reason: "another node is sending it".into(), after: Duration::from_millis(stale_in as u64) })
            }
            Some(_) => Ok(false),
        })
    }

    async fn sent(&self, env: &Envelope, order: &Order, sent: &Sent) -> Result<()> {
        let (id, trace, order, sent) = (env.id.clone(), env.trace_id.clone(), order.clone(), sent.clone());
        self.bus
            .writer()
            .write(move |tx| {
                Box::pin(async move {
                    let state = if sent.delivered { "delivered" } else { "sent" };
                    sqlx::query("UPDATE message_attempts SET state = $2, finished_ms = $3, gateway_id = $4, outcome = $5 WHERE id = $1")
                        .bind(&id)
                        .bind(state)
                        .bind(now_ms())
                        .bind(sent.gateway_ids.first())
                        .bind(if sent.delivered { "delivered" } else { "accepted by the gateway" })
                        .execute(&mut **tx)
                        .await?;
                    for gid in &sent.gateway_ids {
                        tx.insert_later(
                            "INSERT INTO message_gateway_ids (gateway_id, attempt_id)",
                            "ON CONFLICT (gateway_id) DO NOTHING",
                            vec![format!("{}:{gid}", order.channel).into(), id.as_str().into()],
                        );
                    }
                    let from: &[&str] = if sent.delivered { &["queued", "sent"] } else { &["queued"] };
                    set_status(tx, &order.message_id, state, from, &trace).await?;
                    Ok::<_, Error>(())
                })
            })
            .await?;
        self.bus.kick();
        Ok(())
    }


    /// An attempt failed for good (`state` failed or dead): try the next
    /// channel, or settle the message as `state`.
    async fn attempt_failed(&self, attempt_id: &str, message_id: &str, state: &str, reason: &str, trace: &str) -> Result<()> {
        self.order_failed(attempt_id, message_id, None, state, reason, trace).await
    }

    /// [`attempt_failed`](Self::attempt_failed) for an order that may never
    /// have been claimed (it went to the dead letters first: its channel not
    /// configured on any node that took it, or the database down at every
    /// delivery): its attempt is recorded now, so the plan still moves on and
    /// the message does not stay `queued` for ever.
    async fn order_failed(&self, attempt_id: &str, message_id: &str, unclaimed: Option<&Order>, state: &str, reason: &str, trace: &str) -> Result<()> {
        let mut tx = self.db().begin().await?;
        let now = now_ms();
        if let Some(order) = unclaimed {
            sqlx::query(
                "INSERT INTO message_attempts (id, message_id, channel, address, state, tries, started_ms) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (id) DO NOTHING",
            )
            .bind(attempt_id)
            .bind(message_id)
            .bind(&order.channel)
            .bind(&order.address)
            .bind(state)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // An order given up elsewhere (a node without its channel) leaves alone
        // an attempt another node has sent, or is sending and not gone quiet.
        let settled_elsewhere = if unclaimed.is_some() {
            " AND state NOT IN ('sent', 'delivered') AND NOT (state = 'sending' AND started_ms >= $5)"
        } else {
            ""
        };
        let mut update = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE message_attempts SET state = $2, finished_ms = $3, outcome = $4 WHERE id = $1{settled_elsewhere}"
        )))
        .bind(attempt_id)
        .bind(state)
        .bind(now)
        .bind(reason);
        if unclaimed.is_some() {
            update = update.bind(now - STALE_SENDING_MS);
        }
        let failed = update.execute(&mut *tx).await?.rows_affected();
        if failed == 0 && unclaimed.is_some() {
            tx.commit().await?;
            return Ok(());
        }
        // Only a failure on the plan's current channel moves the plan on: the
        // voice call that goes beside an urgent message's first channel does not.
        let judged: Option<String> = sqlx::query(
            "SELECT a.channel FROM message_attempts a JOIN messages m ON m.id = a.message_id \
             WHERE a.id = $1 AND a.channel = m.current_channel",
        )
        .bind(attempt_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("channel"))
        .transpose()?;
        let next = match &judged {
            Some(channel) => self.next_channel(&mut tx, message_id, channel, trace).await?,
            None => Next::NoneLeft,
        };
        if next == Next::NoneLeft {
            // Another channel may still deliver (an urgent call, or the plan's
            // current channel, whose order may not even be taken yet when this
            // failure is of a channel already left): only settle when none is pending.
            let open: i64 = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM message_attempts WHERE message_id = $1 AND state IN ('sending', 'retrying', 'sent', 'delivered')) \
                 + (SELECT COUNT(*) FROM messages m WHERE m.id = $1 AND m.current_channel IS NOT NULL AND NOT EXISTS \
                    (SELECT 1 FROM message_attempts a WHERE a.message_id = m.id AND a.channel = m.current_channel)) AS n",
            )
            .bind(message_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
            if open == 0 {
                set_status(&mut tx, message_id, state, &["queued", "sent"], trace).await?;
            }
        }
        tx.commit().await?;
        self.bus.kick();
        Ok(())
    }

    /// Sends the message on the next channel of its plan, if its current
    /// channel is still `judged` (the one found wanting).
    ///
    /// A compare-and-set: the plan moves on only from the state it was read
    /// in, so when a receipt and the fallback sweep (or two nodes) judge the
    /// same channel at once, one order goes out, not two, and no channel is
    /// skipped.
    async fn next_channel(&self, tx: &mut Tx, message_id: &str, judged: &str, trace: &str) -> Result<Next> {
        let row = sqlx::query("SELECT plan, current_channel, text, template, params, urgent, status FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else { return Ok(Next::NoneLeft) };
        if row.try_get::<Option<String>, _>("current_channel")?.as_deref() != Some(judged) {
            return Ok(Next::MovedOn);
        }
        let status: String = row.try_get("status")?;
        let stored_plan: String = row.try_get("plan")?;
        let mut plan = decode_plan(&stored_plan);
        if plan.is_empty() || matches!(status.as_str(), "delivered" | "failed" | "dead") {
            return Ok(Next::NoneLeft);
        }
        let (kind, address) = plan.remove(0);
        let urgent = row.try_get::<i64, _>("urgent")? != 0;
        let fallback_at = Some(now_ms() + self.fallback_after(urgent));
        let moved = sqlx::query(
            "UPDATE messages SET plan = $2, current_channel = $3, fallback_at_ms = $4, updated_ms = $5 \
             WHERE id = $1 AND current_channel = $6 AND plan = $7",
        )
        .bind(message_id)
        .bind(encode_plan(&plan))
        .bind(kind.as_str())
        .bind(fallback_at)
        .bind(now_ms())
        .bind(judged)
        .bind(&stored_plan)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(Next::MovedOn);
        }
        let order = Order {
            message_id: message_id.to_owned(),
            channel: kind.as_str().into(),
            address,
            text: row.try_get("text")?,
            template: row.try_get("template")?,
            params: row.try_get::<Option<String>, _>("params")?.and_then(|p| serde_json::from_str(&p).ok()),
        };
        enqueue_order(tx, &order, trace).await?;
        Ok(Next::Sent)
    }

    /// Deletes the messages (with their attempts and gateway ids) last
    /// changed before `cutoff_ms`, and the dead letters that died before it,
    /// a thousand messages per transaction so the writer is never held long.
    /// Returns how many messages and dead letters went.
    pub async fn sweep_retention(&self, cutoff_ms: i64) -> Result<u64> {
        const CHUNK: i64 = 1000;
        let mut deleted = 0;
        loop {
            let ids: Vec<String> = sqlx::query("SELECT id FROM messages WHERE updated_ms < $1 LIMIT $2")
                .bind(cutoff_ms)
                .bind(CHUNK)
                .fetch_all(self.db().pool())
                .await?
                .iter()
                .map(|r| r.try_get("id"))
                .collect::<std::result::Result<_, _>>()?;
            if ids.is_empty() {
                break;
            }
            let list = civichub_store::row_placeholders(self.db().backend(), 1, 1, ids.len());
            let mut tx = self.db().begin().await?;
            for sql in [
                format!("DELETE FROM message_gateway_ids WHERE attempt_id IN (SELECT id FROM message_attempts WHERE message_id IN {list})"),
                format!("DELETE FROM message_attempts WHERE message_id IN {list}"),
                format!("DELETE FROM messages WHERE id IN {list}"),
            ] {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for id in &ids {
                    q = q.bind(id);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            deleted += ids.len() as u64;
            if (ids.len() as i64) < CHUNK {
                break;
            }
        }
        let mut tx = self.db().begin().await?;
        deleted += sqlx::query("DELETE FROM bus_dead_letters WHERE dead_ms < $1").bind(cutoff_ms).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }

    /// Sends on the next channel every message whose current channel did
    /// not confirm delivery in time (after asking the channel once more).
    pub async fn sweep_fallbacks(&self) -> Result<usize> {
        let now = now_ms();
        let due = sqlx::query(
            "SELECT id, trace_id, current_channel FROM messages WHERE fallback_at_ms IS NOT NULL AND fallback_at_ms <= $1 \
             AND status IN ('queued', 'sent') LIMIT 100",
        )
        .bind(now)
        .fetch_all(self.db().pool())
        .await?;
        let mut n = 0;
        for row in due {
            let id: String = row.try_get("id")?;
            let trace: String = row.try_get("trace_id")?;
            let judged: String = row.try_get::<Option<String>, _>("current_channel")?.unwrap_or_default();
            // Claim: only one node moves a message on. A lease, not a clear: if
            // this node fails half-way (an error, a crash while asking the
            // gateway), the message comes up again when the lease ends.
            let mut tx = self.db().begin().await?;
            let claimed = sqlx::query("UPDATE messages SET fallback_at_ms = $3 WHERE id = $1 AND fallback_at_ms <= $2")
                .bind(&id)
                .bind(now)
                .bind(now + FALLBACK_LEASE_MS)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            tx.commit().await?;
            if !claimed {
                continue;
            }
            n += 1;
            // The plan's current channel is the one asked (not an urgent message's voice call beside it).
            let sent = sqlx::query(
                "SELECT a.id, a.channel, a.address, a.gateway_id FROM message_attempts a JOIN messages m ON m.id = a.message_id \
                 WHERE a.message_id = $1 AND a.state = 'sent' AND a.channel = m.current_channel \
                 ORDER BY a.started_ms DESC LIMIT 1",
            )
            .bind(&id)
            .fetch_optional(self.db().pool())
            .await?;
            if let Some(a) = sent {
                let attempt: String = a.try_get("id")?;
                let channel = ChannelKind::parse(&a.try_get::<String, _>("channel")?).and_then(|k| self.channels.get(&k));
                let gateway_id: Option<String> = a.try_get("gateway_id")?;
                let verdict = match (channel, gateway_id) {
                    (Some(c), Some(g)) => c.confirm(&g, &a.try_get::<String, _>("address")?).await,
                    _ => None,
                };
                match verdict {
                    Some(true) => {
                        self.delivered(&attempt, &id, "confirmed by the gateway", &trace).await?;
                        continue;
                    }
                    Some(false) => {
                        self.attempt_failed(&attempt, &id, "failed", "the gateway reports it undelivered", &trace).await?;
                        continue;
                    }
                    None => {}
                }
            }
            let mut tx = self.db().begin().await?;
            if self.next_channel(&mut tx, &id, &judged, &trace).await? == Next::NoneLeft {
                // Nothing left to try: ask the channel again later, for a day
                // (a message still queued, its channel retrying, too); then let it be.
                sqlx::query(
                    "UPDATE messages SET fallback_at_ms = CASE WHEN created_ms > $3 THEN $2 ELSE NULL END \
                     WHERE id = $1 AND status IN ('queued', 'sent')",
                )
                .bind(&id)
                .bind(now_ms() + self.settings.fallback_after.as_millis() as i64)
                .bind(now_ms() - 86_400_000)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        if n > 0 {
            self.bus.kick();
        }
        Ok(n)
    }

    async fn delivered(&self, attempt: &str, message: &str, outcome: &str, trace: &str) -> Result<()> {
        let (attempt, message, outcome, trace) = (attempt.to_owned(), message.to_owned(), outcome.to_owned(), trace.to_owned());
        self.bus
            .writer()
            .write(move |tx| {
                Box::pin(async move {
                    sqlx::query("UPDATE message_attempts SET state = 'delivered', outcome = $2, finished_ms = $3 WHERE id = $1")
                        .bind(&attempt)
                        .bind(&outcome)
                        .bind(now_ms())
                        .execute(&mut **tx)
                        .await?;
                    set_status(tx, &message, "delivered", &["queued", "sent"], &trace).await?;
                    Ok::<_, Error>(())
                })
            })
            .await?;
        self.bus.kick();
        Ok(())
    }

    /// A delivery report from a gateway, e.g. an SMS status report.
    async fn receipt(&self, env: &Envelope, r: &Receipt) -> Result<Outcome> {
        let row = sqlx::query(
            "SELECT a.id, a.message_id, a.state FROM message_gateway_ids g JOIN message_attempts a ON a.id = g.attempt_id \
             WHERE g.gateway_id = $1",
        )
        .bind(format!("{}:{}", r.channel, r.gateway_id))
        .fetch_optional(self.db().pool())
        .await?;
        let Some(row) = row else {
            // The report can overtake our record of the submit: look again shortly.
            return Ok(Outcome::Retry { reason: format!("no attempt with gateway id {}", r.gateway_id), after: Some(Duration::from_secs(1)) });
        };
        let attempt: String = row.try_get("id")?;
        let message: String = row.try_get("message_id")?;
        if r.delivered {
            self.delivered(&attempt, &message, &r.stat, &env.trace_id).await?;
        } else {
            let state: String = row.try_get("state")?;
            if state != "delivered" {
                self.attempt_failed(&attempt, &message, "failed", &format!("undelivered: {}", r.stat), &env.trace_id).await?;
            }
        }
        Ok(Outcome::Ack)
    }
}

/// What [`Router::next_channel`] came to.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The order for the next channel is in the outbox.
    Sent,
    /// No channel is left to try (or the message has settled).
    NoneLeft,
    /// The message is no longer on the channel judged: someone else moved it on.
    MovedOn,
}

/// Moves a message to `status` if it is in one of `from`; announces the change.
async fn set_status(tx: &mut Tx, message_id: &str, status: &str, from: &[&str], trace: &str) -> Result<bool> {
    let list = from.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ");
    let extra = if status == "delivered" || status == "failed" || status == "dead" { ", fallback_at_ms = NULL" } else { "" };
    let changed = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE messages SET status = $2, updated_ms = $3{extra} WHERE id = $1 AND status IN ({list})"
    )))
    .bind(message_id)
    .bind(status)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if changed {
        let env = Envelope::new("msg.status", "civichub/messaging", Some(trace), json!({ "id": message_id, "status": status }));
        outbox::enqueue(tx, subjects::MESSAGE_STATUS, &env)?;
    }
    Ok(changed)
}

/// The plan as stored: `channel:address` separated by spaces.
fn encode_plan(plan: &[(ChannelKind, String)]) -> String {
    plan.iter().map(|(k, a)| format!("{}:{a}", k.as_str())).collect::<Vec<_>>().join(" ")
}

fn decode_plan(s: &str) -> Vec<(ChannelKind, String)> {
    s.split_whitespace()
        .filter_map(|item| {
            let (k, a) = item.split_once(':')?;
            Some((ChannelKind::parse(k)?, a.to_owned()))
        })
        .collect()
}

async fn enqueue_order(tx: &mut Tx, order: &Order, trace: &str) -> Result<()> {
    let kind = ChannelKind::parse(&order.channel).ok_or_else(|| Error::Invalid(format!("unknown channel {}", order.channel)))?;
    let env = Envelope::new(&format!("msg.{}.out", kind.as_str()), "civichub/messaging", Some(trace), serde_json::to_value(order)?);
    outbox::enqueue(tx, kind.subject(), &env)
}

/// A delivery report, as published on `civichub.msg.sms.receipt`.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Receipt {
    /// The channel (`sms`).
    pub channel: String,
    /// The gateway's id of what was sent.
    pub gateway_id: String,
    /// The gateway's status word, e.g. `DELIVRD`.
    pub stat: String,
    /// Whether it reached the phone.
    pub delivered: bool,
}

/// Sends the orders of one channel.
struct Sender {
    router: Arc<Router>,
    kind: ChannelKind,
}

#[async_trait]
impl Handler for Sender {
    async fn handle(&self, env: &Envelope, _delivery: u32) -> Outcome {
        let order: Order = match env.payload() {
            Ok(o) => o,
            Err(e) => return Outcome::reject(format!("not a send order: {e}")),
        };
        let Some(channel) = self.router.channels.get(&self.kind) else {
            return Outcome::retry(format!("channel {} is not configured on this node", self.kind.as_str()));
        };
        match self.router.claim(env, &order).await {
            Err(e) => return Outcome::retry(format!("database: {e}")),
            Ok(Err(later)) => return later,
            Ok(Ok(false)) => return Outcome::Ack,
            Ok(Ok(true)) => {}
        }
        let result = channel.send(&order, &env.id).await;
        let recorded = match &result {
            Ok(sent) => self.router.sent(env, &order, sent).await,
            Err(SendError::Permanent(reason)) => {
                self.router.attempt_failed(&env.id, &order.message_id, "failed", reason, &env.trace_id).await
            }
            Err(SendError::Retryable(reason)) => {
                let (id, reason) = (env.id.clone(), reason.clone());
                self.router
                    .bus
                    .writer()
                    .write(move |tx| {
                        Box::pin(async move {
                            sqlx::query("UPDATE message_attempts SET state = 'retrying', outcome = $2 WHERE id = $1")
                                .bind(&id)
                                .bind(&reason)
                                .execute(&mut **tx)
                                .await?;
                            Ok::<_, Error>(())
                        })
                    })
                    .await
            }
        };
        match (result, recorded) {
            (Err(SendError::Retryable(reason)), _) => Outcome::retry(reason),
            (_, Err(e)) => {
                // Sent but not recorded: the redelivery finds the attempt `sending`
                // and takes it over only once it is stale.
                tracing::error!("recording order {}: {e}", env.id);
                Outcome::retry(format!("database: {e}"))
            }
            _ => Outcome::Ack,
        }
    }

    async fn dead(&self, env: &Envelope, reason: &str) {
        let Ok(order) = env.payload::<Order>() else { return };
        if let Err(e) = self.router.order_failed(&env.id, &order.message_id, Some(&order), "dead", reason, &env.trace_id).await {
            tracing::error!("recording dead order {}: {e}", env.id);
        }
    }
}

/// Applies delivery reports.
struct Receipts {
    router: Arc<Router>,
}

#[async_trait]
impl Handler for Receipts {
    async fn handle(&self, env: &Envelope, delivery: u32) -> Outcome {
        let receipt: Receipt = match env.payload() {
            Ok(r) => r,
            Err(e) => return Outcome::reject(format!("not a receipt: {e}")),
        };
        match self.router.receipt(env, &receipt).await {
            Ok(Outcome::Retry { reason, .. }) if delivery >= 5 => {
                // A report for something this hub did not send (or long forgotten).
                tracing::info!("dropping receipt: {reason}");
                Outcome::Ack
            }
            Ok(outcome) => outcome,
            Err(e) => Outcome::retry(format!("database: {e}")),
        }
    }
}

/// Publishes a gateway's delivery report on `civichub.msg.sms.receipt`.
pub async fn publish_receipt(bus: &Bus, receipt: &Receipt) -> Result<()> {
    let env = Envelope::new("msg.sms.receipt", "civichub/sms", None, serde_json::to_value(receipt)?);
    bus.publish(subjects::SMS_RECEIPT, env).await
}

/// Publishes a citizen's SMS on `civichub.msg.sms.in`; `gateway_id`, when
/// the gateway gives one, makes a message it sends again the same envelope.
pub async fn publish_incoming_sms(bus: &Bus, from: &str, to: &str, text: &str, gateway_id: Option<&str>) -> Result<()> {
    let mut env = Envelope::new("msg.sms.in", "civichub/sms", None, json!({ "from": from, "to": to, "text": text }));
    if let Some(id) = gateway_id.filter(|id| !id.is_empty()) {
        // The gateway's id: a message it sends again is the same envelope,
        // which the outbox, JetStream and the consumers already take once.
        env.id = format!("sms-in-{id}");
        env.trace_id = env.id.clone();
    }
    bus.publish(subjects::SMS_IN, env).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A router on a fresh SQLite database, kept in the returned directory.
    async fn router() -> (tempfile::TempDir, civichub_store::Db, Router) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = civichub_store::Db::connect(&civichub_store::DbUrl::sqlite_in(dir.path())).await.expect("db");
        let router = Router::new(Bus::local(db.clone()), RouterSettings::default());
        (dir, db, router)
    }

    /// Stores message `m`, on `current` with `plan` left, as sent.
    async fn sent_message(db: &civichub_store::Db, current: &str, plan: &str) {
        sqlx::query(
            "INSERT INTO messages (id, recipient_kind, recipient, channel, text, status, plan, current_channel, trace_id, created_ms, updated_ms) \
             VALUES ('m', 'user', 'zhangsan', 'auto', 'hi', 'sent', $1, $2, 't', 1, 1)",
        )
        .bind(plan)
        .bind(current)
        .execute(db.pool())
        .await
        .expect("message");
    }

    #[tokio::test]
    async fn retention_deletes_old_messages_with_their_attempts_and_old_dead_letters() {
        let (_dir, db, router) = router().await;
        let day = 86_400_000;
        for (id, updated) in [("old", 10 * day), ("new", 200 * day)] {
            sqlx::query(
                "INSERT INTO messages (id, recipient_kind, recipient, channel, text, status, plan, trace_id, created_ms, updated_ms) \
                 VALUES ($1, 'phone', '13812345678', 'sms', 'hi', 'delivered', 'sms:13812345678', $1, $2, $2)",
            )
            .bind(id)
            .bind(updated)
            .execute(db.pool())
            .await
            .expect("message");
            sqlx::query("INSERT INTO message_attempts (id, message_id, channel, address, state, started_ms) VALUES ($1, $2, 'sms', '13812345678', 'delivered', $3)")
                .bind(format!("{id}-1"))
                .bind(id)
                .bind(updated)
                .execute(db.pool())
                .await
                .expect("attempt");
            sqlx::query("INSERT INTO message_gateway_ids (gateway_id, attempt_id) VALUES ($1, $2)").bind(format!("gw-{id}")).bind(format!("{id}-1")).execute(db.pool()).await.expect("gateway id");
            sqlx::query("INSERT INTO bus_dead_letters (id, consumer, subject, envelope, reason, attempts, dead_ms) VALUES ($1, 'c', 's', '{}', 'r', 6, $2)")
                .bind(format!("dead-{id}"))
                .bind(updated)
                .execute(db.pool())
                .await
                .expect("dead letter");
        }
        assert_eq!(router.sweep_retention(100 * day).await.expect("sweep"), 2, "one message, one dead letter");
        for (table, column) in [("messages", "id"), ("message_attempts", "message_id"), ("message_gateway_ids", "gateway_id"), ("bus_dead_letters", "id")] {
            let left: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {column} AS v FROM {table}")))
                .fetch_all(db.pool())
                .await
                .expect("select")
                .iter()
                .map(|r| r.try_get("v").expect("v"))
                .collect();
            assert_eq!(left.len(), 1, "{table}: {left:?}");
            assert!(left[0].contains("new"), "{table}: {left:?}");
        }
        assert_eq!(router.sweep_retention(100 * day).await.expect("again"), 0);
    }

    #[tokio::test]
    async fn a_channel_judged_twice_moves_the_plan_on_once() {
        let (_dir, db, router) = router().await;
        sent_message(&db, "dingtalk", "sms:13812345678 voice:13812345678").await;
        let orders = || async {
            sqlx::query("SELECT COUNT(*) AS n FROM bus_outbox WHERE subject = $1")
                .bind(ChannelKind::Sms.subject())
                .fetch_one(db.pool())
                .await
                .expect("count")
                .get::<i64, _>("n")
        };
        // A receipt and the fallback sweep both find DingTalk wanting: the first moves on to SMS...
        for expected in [Next::Sent, Next::MovedOn] {
            let mut tx = db.begin().await.expect("begin");
            assert_eq!(router.next_channel(&mut tx, "m", "dingtalk", "t").await.expect("next"), expected);
            tx.commit().await.expect("commit");
        }
        // ...and the second neither sends a second SMS nor skips it for voice.
        assert_eq!(orders().await, 1);
        let row = sqlx::query("SELECT current_channel, plan FROM messages WHERE id = 'm'").fetch_one(db.pool()).await.expect("message");
        assert_eq!((row.get::<String, _>("current_channel"), row.get::<String, _>("plan")), ("sms".to_owned(), "voice:13812345678".to_owned()));
    }

    #[tokio::test]
    async fn a_failure_of_a_channel_already_left_waits_for_the_current_one() {
        let (_dir, db, router) = router().await;
        // The sweep moved the message on from DingTalk to SMS; the SMS order is not taken yet.
        sent_message(&db, "sms", "").await;
        let attempt = |id: &'static str, channel: &'static str, state: &'static str| {
            sqlx::query("INSERT INTO message_attempts (id, message_id, channel, address, state, started_ms) VALUES ($1, 'm', $2, 'x', $3, 1)")
                .bind(id)
                .bind(channel)
                .bind(state)
                .execute(db.pool())
        };
        attempt("dt", "dingtalk", "sent").await.expect("dingtalk attempt");
        let status = || async { sqlx::query("SELECT status FROM messages WHERE id = 'm'").fetch_one(db.pool()).await.expect("status").get::<String, _>("status") };
        // DingTalk's late failure report settles nothing while the SMS is on its way...
        router.attempt_failed("dt", "m", "failed", "late report", "t").await.expect("failed");
        assert_eq!(status().await, "sent");
        // ...but once the SMS has failed too, the message has.
        attempt("sms", "sms", "failed").await.expect("sms attempt");
        router.attempt_failed("dt", "m", "failed", "late report", "t").await.expect("failed");
        assert_eq!(status().await, "failed");
    }

    #[tokio::test]
    async fn an_order_dead_before_it_was_claimed_still_moves_the_plan_on() {
        let (_dir, db, router) = router().await;
        sent_message(&db, "dingtalk", "sms:13812345678").await;
        let order = |channel: &str, address: &str| Order {
            message_id: "m".into(),
            channel: channel.into(),
            address: address.into(),
            text: "hi".into(),
            template: None,
            params: None,
        };
        let status = || async {
            let row = sqlx::query("SELECT status, current_channel FROM messages WHERE id = 'm'").fetch_one(db.pool()).await.expect("message");
            (row.get::<String, _>("status"), row.get::<Option<String>, _>("current_channel"))
        };
        // The DingTalk order gave up without ever being taken: the SMS goes instead...
        router.order_failed("o-dt", "m", Some(&order("dingtalk", "zhangsan")), "dead", "gave up", "t").await.expect("dead");
        assert_eq!(status().await, ("sent".to_owned(), Some("sms".to_owned())));
        // ...and when that one dies untaken too, the message is dead, not queued for ever.
        router.order_failed("o-sms", "m", Some(&order("sms", "13812345678")), "dead", "gave up", "t").await.expect("dead");
        assert_eq!(status().await.0, "dead");
        let attempts: Vec<(String, String)> = sqlx::query("SELECT channel, state FROM message_attempts WHERE message_id = 'm' ORDER BY id")
            .fetch_all(db.pool())
            .await
            .expect("attempts")
            .iter()
            .map(|r| (r.get("channel"), r.get("state")))
            .collect();
        assert_eq!(attempts, [("dingtalk".to_owned(), "dead".to_owned()), ("sms".to_owned(), "dead".to_owned())]);
    }

    #[tokio::test]
    async fn an_order_given_up_elsewhere_leaves_a_sent_attempt_alone() {
        let (_dir, db, router) = router().await;
        sent_message(&db, "sms", "voice:13812345678").await;
        // One node sent the SMS; a node without the SMS channel gave the same order up.
        sqlx::query("INSERT INTO message_attempts (id, message_id, channel, address, state, started_ms) VALUES ('o-sms', 'm', 'sms', '13812345678', 'sent', 1)")
            .execute(db.pool())
            .await
            .expect("attempt");
        let order = Order { message_id: "m".into(), channel: "sms".into(), address: "13812345678".into(), text: "hi".into(), template: None, params: None };
        router.order_failed("o-sms", "m", Some(&order), "dead", "channel sms is not configured on this node", "t").await.expect("dead");
        let row = sqlx::query("SELECT a.state, m.current_channel FROM message_attempts a JOIN messages m ON m.id = a.message_id WHERE a.id = 'o-sms'")
            .fetch_one(db.pool())
            .await
            .expect("attempt");
        assert_eq!((row.get::<String, _>("state"), row.get::<String, _>("current_channel")), ("sent".to_owned(), "sms".to_owned()), "no voice call for a sent SMS");
    }

    #[test]
    fn plans_round_trip() {
        let plan = vec![(ChannelKind::DingTalk, "zhangsan".to_owned()), (ChannelKind::Sms, "13812345678".to_owned())];
        assert_eq!(decode_plan(&encode_plan(&plan)), plan);
        assert_eq!(decode_plan("dingtalk:dept:12"), vec![(ChannelKind::DingTalk, "dept:12".to_owned())]);
        assert!(decode_plan("").is_empty());
    }
}

