//! `CmppClient`: a CMPP 2.0 SP client over one long-lived TCP connection.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout, timeout_at};

use crate::content::split_message;
use crate::error::{Error, Result};
use crate::gateway::{OutgoingSms, Received, SmsGateway, Submitted, normalize_mobile};
use crate::link::{self, Command, PendingSubmit, Seq};
use crate::pdu::{MsgResp, RESULT_FLOW_CONTROL, Submit, format_msg_id};
use crate::secret::Secret;

/// Settings for [`CmppClient`].
#[derive(Debug, Clone)]
pub struct CmppConfig {
    /// Gateway address, `host:port` (port 7890 by convention).
    pub addr: String,
    /// SP id (`Source_Addr`, 6 characters).
    pub sp_id: String,
    /// Shared secret for the CONNECT authenticator.
    pub secret: Secret,
    /// Service number shown to mobiles (`Src_Id`), e.g. `10690012345`.
    pub src_id: String,
    /// `Service_Id` (up to 10 characters).
    pub service_id: String,
    /// Most SUBMITs awaiting their SUBMIT_RESP at once (default 16).
    pub window: usize,
    /// How long a send waits for the link, for a window slot, and for each SUBMIT_RESP (default 10 s).
    pub submit_timeout: Duration,
    /// Send ACTIVE_TEST after this long without traffic from the gateway (default 30 s).
    pub active_test_interval: Duration,
    /// Reconnect once this many ACTIVE_TESTs in a row went unanswered (default 3).
    pub max_missed_active_tests: u32,
    /// Upper bound of the exponential reconnect backoff (default 60 s).
    pub reconnect_backoff_max: Duration,
    /// First reconnect delay, doubled after each failed attempt (default 1 s).
    pub reconnect_backoff_min: Duration,
    /// Timeout for the TCP connect and for CONNECT_RESP (default 10 s).
    pub connect_timeout: Duration,
    /// `Fee_UserType` for SUBMITs (default 2: the SP pays).
    pub fee_user_type: u8,
    /// `FeeType` for SUBMITs (default `"01"`: free to the mobile).
    pub fee_type: String,
    /// `FeeCode` for SUBMITs (default `"000000"`).
    pub fee_code: String,
    /// Capacity of the [`Received`] event channel (default 1024). When it is full the client stops
    /// reading from the gateway until the consumer catches up.
    pub event_buffer: usize,
}

impl Default for CmppConfig {
    fn default() -> Self {
        CmppConfig {
            addr: "127.0.0.1:7890".into(),
            sp_id: String::new(),
            secret: Secret::default(),
            src_id: String::new(),
            service_id: String::new(),
            window: 16,
            submit_timeout: Duration::from_secs(10),
            active_test_interval: Duration::from_secs(30),
            max_missed_active_tests: 3,
            reconnect_backoff_max: Duration::from_secs(60),
            reconnect_backoff_min: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            fee_user_type: 2,
            fee_type: "01".into(),
            fee_code: "000000".into(),
            event_buffer: 1024,
        }
    }
}

impl CmppConfig {
    fn validate(&self) -> Result<()> {
        let too_long = |name: &str, value: &str, max: usize| {
            if value.len() > max {
                Err(Error::Config(format!("{name} longer than {max} octets")))
            } else {
                Ok(())
            }
        };
        too_long("sp_id", &self.sp_id, 6)?;
        too_long("src_id", &self.src_id, 21)?;
        too_long("service_id", &self.service_id, 10)?;
        too_long("fee_type", &self.fee_type, 2)?;
        too_long("fee_code", &self.fee_code, 6)?;
        if self.window == 0 || self.window > Semaphore::MAX_PERMITS {
            return Err(Error::Config(
                "window must be between 1 and the semaphore maximum".into(),
            ));
        }
        if self.active_test_interval.is_zero() || self.submit_timeout.is_zero() {
            return Err(Error::Config(
                "active_test_interval and submit_timeout must be positive".into(),
            ));
        }
        if self.event_buffer == 0 {
            return Err(Error::Config("event_buffer must be at least 1".into()));
        }
        Ok(())
    }
}

/// A CMPP 2.0 client. Cheap to clone; all clones share one connection task.
///
/// The task keeps the link up (ACTIVE_TEST when idle, reconnect with backoff), answers the
/// gateway's ACTIVE_TEST and DELIVER, and forwards reports and MO messages as [`Received`] events, answering each DELIVER once its event is stored.
/// When the last clone is dropped, or on [`CmppClient::shutdown`], it sends TERMINATE and ends.
#[derive(Clone)]
pub struct CmppClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<CmppConfig>,
    commands: mpsc::Sender<Command>,
    link: watch::Receiver<bool>,
    window: Arc<Semaphore>,
    next_ref: AtomicU8,
}

impl fmt::Debug for CmppClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CmppClient")
            .field("addr", &self.inner.config.addr)
            .field("sp_id", &self.inner.config.sp_id)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl CmppClient {
    /// Connects and logs in, failing if this first login fails (e.g. [`Error::AuthFailed`]);
    /// afterwards the link is kept up in the background.
    pub async fn connect(config: CmppConfig) -> Result<(Self, mpsc::Receiver<Received>)> {
        config.validate()?;
        let config = Arc::new(config);
        let mut seq = Seq::default();
        let conn = link::login(&config, &mut seq).await?;
        Ok(Self::start(config, Some(conn), seq))
    }

    /// Starts the connection task without waiting for the first login; sends wait for the link
    /// (up to the submit timeout) until it is up. Must be called inside a Tokio runtime.
    pub fn spawn(config: CmppConfig) -> Result<(Self, mpsc::Receiver<Received>)> {
        config.validate()?;
        Ok(Self::start(Arc::new(config), None, Seq::default()))
    }

    fn start(
        config: Arc<CmppConfig>,
        first: Option<link::Connection>,
        seq: Seq,
    ) -> (Self, mpsc::Receiver<Received>) {
        let (cmd_tx, cmd_rx) = mpsc::channel(config.window + 16);
        let (link_tx, link_rx) = watch::channel(false);
        let (ev_tx, ev_rx) = mpsc::channel(config.event_buffer);
        let window = Arc::new(Semaphore::new(config.window));
        tokio::spawn(link::run(
            config.clone(),
            first,
            seq,
            cmd_rx,
            link_tx,
            ev_tx,
            window.clone(),
        ));
        let client = CmppClient {
            inner: Arc::new(Inner {
                config,
                commands: cmd_tx,
                link: link_rx,
                window,
                next_ref: AtomicU8::new(rand::random()),
            }),
        };
        (client, ev_rx)
    }

    /// Whether the link is currently logged in.
    pub fn is_connected(&self) -> bool {
        *self.inner.link.borrow()
    }

    /// Waits until the link is logged in, up to `wait`; returns whether it is.
    pub async fn wait_connected(&self, wait: Duration) -> bool {
        let mut link = self.inner.link.clone();
        matches!(timeout(wait, link.wait_for(|up| *up)).await, Ok(Ok(_)))
    }

    /// Sends TERMINATE, waits for its answer (briefly) and stops the connection task.
    /// Sends after this fail with [`Error::Closed`].
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Shutdown(tx))
            .await
            .is_ok()
        {
            let wait = self.inner.config.connect_timeout + Duration::from_secs(1);
            let _ = timeout(wait, rx).await;
        }
    }

    /// Sends one SUBMIT (one segment) and returns the gateway's SUBMIT_RESP, whatever its `Result`.
    pub async fn submit(&self, submit: Submit) -> Result<MsgResp> {
        let rx = self.enqueue(submit).await?;
        self.await_response(rx).await
    }

    async fn enqueue(&self, submit: Submit) -> Result<oneshot::Receiver<Result<MsgResp>>> {
        let deadline = Instant::now() + self.inner.config.submit_timeout;
        let mut link = self.inner.link.clone();
        match timeout_at(deadline, link.wait_for(|up| *up)).await {
            Err(_) => return Err(Error::LinkDown),
            Ok(Err(_)) => return Err(Error::Closed),
            Ok(Ok(_)) => {}
        }
        let permit = match timeout_at(deadline, self.inner.window.clone().acquire_owned()).await {
            Err(_) => {
                return Err(Error::Timeout(
                    "window of unanswered SUBMITs stayed full".into(),
                ));
            }
            Ok(Err(_)) => return Err(Error::Closed),
            Ok(Ok(permit)) => permit,
        };
        let (reply, rx) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Submit(PendingSubmit {
                submit,
                permit,
                reply,
            }))
            .await
            .map_err(|_| Error::Closed)?;
        Ok(rx)
    }

    async fn await_response(&self, rx: oneshot::Receiver<Result<MsgResp>>) -> Result<MsgResp> {
        // The connection task enforces the submit timeout once the SUBMIT is written; this is a
        // guard in case the request sat in the queue.
        let guard = self.inner.config.submit_timeout * 2 + Duration::from_secs(1);
        match timeout(guard, rx).await {
            Err(_) => Err(Error::Timeout("no SUBMIT_RESP".into())),
            Ok(Err(_)) => Err(Error::ConnectionLost("request dropped".into())),
            Ok(Ok(result)) => result,
        }
    }

    fn build_submit(&self, to: &str, want_report: bool) -> Submit {
        let cfg = &self.inner.config;
        Submit {
            registered_delivery: u8::from(want_report),
            msg_level: 0,
            service_id: cfg.service_id.clone(),
            fee_user_type: cfg.fee_user_type,
            msg_src: cfg.sp_id.clone(),
            fee_type: cfg.fee_type.clone(),
            fee_code: cfg.fee_code.clone(),
            src_id: cfg.src_id.clone(),
            dest_terminal_ids: vec![to.to_owned()],
            ..Submit::default()
        }
    }
}

/// Maps a SUBMIT_RESP to the gateway id, or to an error by its CMPP 2.0 `Result` code.
pub fn submit_result(resp: &MsgResp) -> Result<u64> {
    let message = match resp.result {
        0 => return Ok(resp.msg_id),
        RESULT_FLOW_CONTROL => {
            return Err(Error::FlowControl(
                "gateway answered SUBMIT with Result 8 (flow control)".into(),
            ));
        }
        1 => "message structure error",
        2 => "command word error",
        3 => "duplicate sequence id",
        4 => "message length error",
        5 => "fee code error",
        6 => "message exceeds maximum length",
        7 => "service id error",
        _ => "other error",
    };
    Err(Error::Rejected {
        code: resp.result.to_string(),
        message: message.into(),
    })
}

/// Waits before submitting again a segment the gateway refused with flow
/// control (Result 8), within one send.
const FLOW_CONTROL_PAUSES: [Duration; 3] = [Duration::from_millis(200), Duration::from_millis(500), Duration::from_millis(1000)];

#[async_trait]
impl SmsGateway for CmppClient {
    /// Splits the text into segments, submits them (pipelined within the window) and returns one
    /// gateway id per segment. If a later segment fails, earlier ones may already be submitted.
    async fn send(&self, sms: &OutgoingSms) -> Result<Submitted> {
        let to = normalize_mobile(&sms.to)?;
        if sms.text.is_empty() {
            return Err(Error::InvalidContent("empty text".into()));
        }
        let reference = self.inner.next_ref.fetch_add(1, Ordering::Relaxed);
        let segments = split_message(&sms.text, reference)?;
        let mut waiting = Vec::with_capacity(segments.len());
        for seg in segments {
            let mut submit = self.build_submit(&to, sms.want_report);
            submit.pk_total = seg.pk_total;
            submit.pk_number = seg.pk_number;
            submit.tp_udhi = seg.tp_udhi;
            submit.msg_fmt = seg.msg_fmt;
            submit.msg_content = seg.content;
            waiting.push((submit.clone(), self.enqueue(submit).await?));
        }
        let mut gateway_ids = Vec::with_capacity(waiting.len());
        for (submit, rx) in waiting {
            let mut result = submit_result(&self.await_response(rx).await?);
            // Flow control refuses this segment only: it is submitted again
            // here, after a pause, rather than failing the whole message,
            // whose earlier segments a retry of the send would deliver twice.
            for pause in FLOW_CONTROL_PAUSES {
                if !matches!(result, Err(Error::FlowControl(_))) {
                    break;
                }
                tokio::time::sleep(pause).await;
                let rx = self.enqueue(submit.clone()).await?;
                result = submit_result(&self.await_response(rx).await?);
            }
            gateway_ids.push(format_msg_id(result?));
        }
        tracing::debug!(reference = %sms.reference, ids = ?gateway_ids, "CMPP submit accepted");
        Ok(Submitted { gateway_ids })
    }

    fn name(&self) -> &'static str {
        "cmpp"
    }
}
