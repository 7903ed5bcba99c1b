//! Wiring: the configured gateways in `integrations/` become the message
//! router's channels.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use futures_util::StreamExt;
use civichub_messaging::Bus;
use civichub_messaging::messages::{
    Channel, ChannelKind, Order, Receipt, Router, RouterSettings, SendError, Sent, publish_incoming_sms, publish_receipt,
};
use civichub_sms::{OutgoingSms, SmsEvent, SmsGateway};
use url::Url;

use crate::config::{Config, MessagingArgs};

/// The message router with every configured channel.
pub async fn router(config: &Config, bus: Bus) -> Result<Router> {
    let m = &config.messaging;
    let defaults = RouterSettings::default();
    let retry_backoff = match &m.message_retry_backoff {
        None => defaults.retry_backoff.clone(),
        Some(list) => list
            .split(',')
            .map(|s| s.trim().parse().ok().and_then(seconds).with_context(|| format!("--message-retry-backoff: {s:?} is not a number of seconds")))
            .collect::<Result<Vec<_>>>()?,
    };
    // Bounded, so that the clock arithmetic on them cannot overflow.
    let fallback = |v: Option<u64>, flag: &str, default: Duration| match v {
        None => Ok(default),
        Some(s) if s <= 7 * 86_400 => Ok(Duration::from_secs(s)),
        Some(_) => anyhow::bail!("{flag} is at most 604800 seconds (a week)"),
    };
    let settings = RouterSettings {
        fallback_after: fallback(m.message_fallback_after, "--message-fallback-after", defaults.fallback_after)?,
        urgent_fallback_after: fallback(m.urgent_fallback_after, "--urgent-fallback-after", defaults.urgent_fallback_after)?,
        retry_backoff,
        max_deliver: m.message_max_deliver.unwrap_or(defaults.max_deliver).max(1),
        retention: match m.message_retention_days {
            None => defaults.retention,
            Some(0) => None,
            Some(days) if days <= MAX_RETENTION_DAYS => Some(Duration::from_secs(days * 86_400)),
            Some(_) => anyhow::bail!("--message-retention-days is at most {MAX_RETENTION_DAYS} (a hundred years); 0 keeps messages for ever"),
        },
    };
    let mut router = Router::new(bus.clone(), settings);
    if let Some(sms) = sms(m, &bus)? {
        router.add_channel(Arc::new(SmsChannel { gateway: sms }));
    }
    if let Some(dingtalk) = dingtalk(m)? {
        router.add_channel(Arc::new(DingTalkChannel { client: dingtalk, agent_id: m.dingtalk_agent_id.unwrap_or_default() }));
    }
    if let Some(url) = &m.voice_gateway_url {
        let base = Url::parse(url).with_context(|| format!("invalid voice gateway URL {url:?}"))?;
        let key = m.voice_api_key.as_ref().map(|k| k.expose().to_owned()).filter(|k| !k.is_empty());
        let key = key.context("--voice-api-key is required with --voice-gateway-url (every call would be refused without it)")?;
        let config = civichub_fusion::VoiceConfig::new(
            base,
            key,
            m.voice_caller.clone().unwrap_or_else(|| "12345".into()),
        );
        router.add_channel(Arc::new(VoiceChannel { gateway: civichub_fusion::VoiceGateway::new(config)? }));
    }
    Ok(router)
}

/// The longest `--message-retention-days`.
const MAX_RETENTION_DAYS: u64 = 36_500;

fn seconds(v: f64) -> Option<Duration> {
    (v.is_finite() && (0.0..=86_400.0).contains(&v)).then(|| Duration::from_secs_f64(v))
}

fn required<'a>(value: &'a Option<String>, flag: &str, gateway: &str) -> Result<&'a str> {
    value.as_deref().filter(|v| !v.is_empty()).with_context(|| format!("{flag} is required with --sms-gateway {gateway}"))
}

/// A required secret setting of an SMS gateway.
fn required_secret<'a>(value: &'a Option<crate::config::Secret>, flag: &str, gateway: &str) -> Result<&'a str> {
    value.as_ref().map(crate::config::Secret::expose).filter(|v| !v.is_empty()).with_context(|| format!("{flag} is required with --sms-gateway {gateway}"))
}

/// The configured SMS gateway; a CMPP link also starts forwarding status
/// reports and citizens' messages onto the bus.
fn sms(m: &MessagingArgs, bus: &Bus) -> Result<Option<Arc<dyn SmsGateway>>> {
    match m.sms_gateway.as_deref() {
        None => Ok(None),
        Some("cmpp") => {
            let config = civichub_sms::CmppConfig {
                addr: required(&m.cmpp_addr, "--cmpp-addr", "cmpp")?.to_owned(),
                sp_id: required(&m.cmpp_sp_id, "--cmpp-sp-id", "cmpp")?.to_owned(),
                secret: civichub_sms::Secret::new(required_secret(&m.cmpp_secret, "--cmpp-secret", "cmpp")?),
                src_id: required(&m.cmpp_src_id, "--cmpp-src-id", "cmpp")?.to_owned(),
                service_id: m.cmpp_service_id.clone().unwrap_or_else(|| "CIVICHUB".into()),
                window: m.cmpp_window.unwrap_or(16),
                submit_timeout: match m.cmpp_submit_timeout {
                    None => Duration::from_secs(10),
                    Some(t) => seconds(t).context("--cmpp-submit-timeout must be 0–86400 seconds")?,
                },
                ..Default::default()
            };
            let (client, events) = civichub_sms::CmppClient::spawn(config)?;
            let bus = bus.clone();
            // Events are stored concurrently, so that a burst of status reports
            // shares group commits; the link waits while this channel is full.
            let events = futures_util::stream::unfold(events, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
            tokio::spawn(events.for_each_concurrent(SMS_EVENTS_IN_FLIGHT, move |received: civichub_sms::Received| {
                let bus = bus.clone();
                async move {
                    // Kept trying until stored; only then is the gateway answered
                    // (until then it would send the DELIVER again, not lose it).
                    let mut pause = Duration::from_millis(100);
                    loop {
                        let published = match &received.event {
                            SmsEvent::Report { gateway_id, stat, delivered, .. } => {
                                let receipt = Receipt { channel: "sms".into(), gateway_id: gateway_id.clone(), stat: stat.clone(), delivered: *delivered };
                                publish_receipt(&bus, &receipt).await
                            }
                            SmsEvent::Incoming { from, to, text, msg_id } => publish_incoming_sms(&bus, from, to, text, Some(msg_id)).await,
                        };
                        match published {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::error!("storing an SMS event (trying again in {pause:?}): {e}");
                                tokio::time::sleep(pause).await;
                                pause = (pause * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                    received.stored();
                }
            }));
            Ok(Some(Arc::new(client)))
        }
        Some("aliyun") => {
            let mut config = civichub_sms::AliyunConfig {
                access_key_id: required(&m.aliyun_access_key_id, "--aliyun-access-key-id", "aliyun")?.to_owned(),
                access_key_secret: civichub_sms::Secret::new(required_secret(&m.aliyun_access_key_secret, "--aliyun-access-key-secret", "aliyun")?),
                sign_name: required(&m.aliyun_sms_sign_name, "--aliyun-sms-sign-name", "aliyun")?.to_owned(),
                default_template_code: required(&m.aliyun_sms_template, "--aliyun-sms-template", "aliyun")?.to_owned(),
                ..Default::default()
            };
            if let Some(endpoint) = &m.aliyun_sms_endpoint {
                config.endpoint = endpoint.clone();
            }
            Ok(Some(Arc::new(civichub_sms::AliyunSms::new(config)?)))
        }
        Some(other) => anyhow::bail!("unknown SMS gateway {other:?}"),
    }
}

/// SMS events (status reports, citizens' replies) being stored at once.
const SMS_EVENTS_IN_FLIGHT: usize = 256;

/// SMS through CMPP or a cloud API; delivery comes back as status reports.
struct SmsChannel {
    gateway: Arc<dyn SmsGateway>,
}

#[async_trait]
impl Channel for SmsChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn send(&self, order: &Order, reference: &str) -> Result<Sent, SendError> {
        let sms = OutgoingSms {
            to: order.address.clone(),
            text: order.text.clone(),
            template: order.template.clone().map(|code| civichub_sms::Template {
                code,
                params: order.params.clone().unwrap_or_else(|| serde_json::json!({})),
            }),
            reference: reference.to_owned(),
            want_report: true,
        };
        match self.gateway.send(&sms).await {
            Ok(submitted) => Ok(Sent { gateway_ids: submitted.gateway_ids, delivered: false }),
            Err(e) if e.is_retryable() => Err(SendError::Retryable(format!("{}: {e}", self.gateway.name()))),
            Err(e) => Err(SendError::Permanent(format!("{}: {e}", self.gateway.name()))),
        }
    }
}

/// The DingTalk client, when the app is configured.
pub(crate) fn dingtalk(m: &MessagingArgs) -> Result<Option<civichub_dingtalk::DingTalk>> {
    let Some(key) = &m.dingtalk_app_key else { return Ok(None) };
    let secret = m.dingtalk_app_secret.as_ref().map(|s| s.expose().to_owned()).context("--dingtalk-app-secret is required with --dingtalk-app-key")?;
    let agent = m.dingtalk_agent_id.context("--dingtalk-agent-id is required with --dingtalk-app-key")?;
    let mut config = civichub_dingtalk::DingTalkConfig::new(key.clone(), secret, agent);
    config.corp_id = m.dingtalk_corp_id.clone();
    for (value, slot, flag) in [
        (&m.dingtalk_api_base, &mut config.api_base, "--dingtalk-api-base"),
        (&m.dingtalk_oapi_base, &mut config.oapi_base, "--dingtalk-oapi-base"),
        (&m.dingtalk_login_base, &mut config.login_base, "--dingtalk-login-base"),
    ] {
        if let Some(v) = value {
            *slot = Url::parse(v).with_context(|| format!("invalid {flag} {v:?}"))?;
        }
    }
    Ok(Some(civichub_dingtalk::DingTalk::new(config)?))
}

/// DingTalk work notices; delivery is confirmed from the send result.
struct DingTalkChannel {
    client: civichub_dingtalk::DingTalk,
    agent_id: i64,
}

fn dingtalk_error(e: civichub_dingtalk::Error) -> SendError {
    if e.is_retryable() { SendError::Retryable(e.to_string()) } else { SendError::Permanent(e.to_string()) }
}

#[async_trait]
impl Channel for DingTalkChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::DingTalk
    }

    async fn send(&self, order: &Order, _reference: &str) -> Result<Sent, SendError> {
        let (userids, dept_ids) = match order.address.strip_prefix("dept:") {
            Some(d) => (Vec::new(), vec![d.parse::<i64>().map_err(|_| SendError::Permanent(format!("bad department {d}")))?]),
            None => (vec![order.address.clone()], Vec::new()),
        };
        let notice = civichub_dingtalk::WorkNotice {
            userids,
            dept_ids,
            msg: civichub_dingtalk::WorkMessage::Text { content: order.text.clone() },
        };
        let task = self.client.send_work_notice(&notice).await.map_err(dingtalk_error)?;
        tracing::debug!("DingTalk work notice task {task} (agent {})", self.agent_id);
        Ok(Sent { gateway_ids: vec![task.to_string()], delivered: false })
    }

    async fn confirm(&self, gateway_id: &str, address: &str) -> Option<bool> {
        let result = self.client.send_result(gateway_id.parse().ok()?).await.ok()?;
        let has = |list: &[String]| list.iter().any(|u| u == address);
        if address.starts_with("dept:") {
            return if !result.read.is_empty() || !result.unread.is_empty() { Some(true) } else { None };
        }
        if has(&result.read) || has(&result.unread) {
            Some(true)
        } else if has(&result.failed) || has(&result.forbidden) || has(&result.invalid) {
            Some(false)
        } else {
            None
        }
    }
}

/// Voice notifications through the configured voice gateway.
struct VoiceChannel {
    gateway: civichub_fusion::VoiceGateway,
}

#[async_trait]
impl Channel for VoiceChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Voice
    }

    async fn send(&self, order: &Order, reference: &str) -> Result<Sent, SendError> {
        let notice = civichub_fusion::VoiceNotice { to: order.address.clone(), text: order.text.clone(), reference: reference.to_owned() };
        match self.gateway.notify(&notice).await {
            Ok(call) => Ok(Sent { gateway_ids: vec![call.call_id], delivered: false }),
            Err(e) if e.is_retryable() => Err(SendError::Retryable(e.to_string())),
            Err(e) => Err(SendError::Permanent(e.to_string())),
        }
    }

    async fn confirm(&self, gateway_id: &str, _address: &str) -> Option<bool> {
        use civichub_fusion::VoiceState;
        match self.gateway.status(gateway_id).await.ok()?.state {
            VoiceState::Answered => Some(true),
            VoiceState::NoAnswer | VoiceState::Busy | VoiceState::Failed => Some(false),
            VoiceState::Pending => None,
        }
    }
}
