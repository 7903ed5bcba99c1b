//! A CMPP 2.0 gateway (ISMG) simulator over real TCP, for tests and local development.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::auth::china_offset;
use crate::codec::{Decoded, Frame, FrameDecoder, Pdu, command};
use crate::content::{decode_text, split_message, split_udh};
use crate::error::{Error, Result};
use crate::pdu::{
    CMPP_VERSION_2_0, Connect, ConnectResp, Deliver, MsgResp, StatusReport, Submit, compose_msg_id,
};
use crate::secret::Secret;

/// Settings for [`CmppSimulator`].
#[derive(Debug, Clone)]
pub struct CmppSimConfig {
    /// Where to listen; port 0 picks a free port (see [`CmppSimulator::addr`]).
    pub listen: SocketAddr,
    /// The SP id clients must log in with.
    pub sp_id: String,
    /// The shared secret clients must prove.
    pub secret: Secret,
    /// Delay between a SUBMIT_RESP and the status report (when one was requested).
    pub report_delay: Duration,
    /// The service number MO messages are addressed to (`Dest_Id`).
    pub service_number: String,
    /// How often the simulator sends its own ACTIVE_TEST on each connection (`None`: never).
    pub active_test_interval: Option<Duration>,
    /// The 22-bit gateway code embedded in generated `Msg_Id`s.
    pub gateway_code: u32,
}

impl Default for CmppSimConfig {
    fn default() -> Self {
        CmppSimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            sp_id: "901234".into(),
            secret: Secret::new("secret"),
            report_delay: Duration::from_millis(50),
            service_number: "10690012345".into(),
            active_test_interval: Some(Duration::from_secs(30)),
            gateway_code: 0x01_2345,
        }
    }
}

/// One SUBMIT as the simulator received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitRecord {
    /// The SUBMIT's `Sequence_Id`.
    pub sequence_id: u32,
    /// The `Msg_Id` the simulator assigned (0 if it was rejected).
    pub msg_id: u64,
    /// The `Result` it answered with.
    pub result: u8,
    /// `Dest_terminal_Id`s.
    pub dest_terminal_ids: Vec<String>,
    /// `Src_Id`.
    pub src_id: String,
    /// `Service_Id`.
    pub service_id: String,
    /// `Msg_Fmt`.
    pub msg_fmt: u8,
    /// `TP_udhi`.
    pub tp_udhi: u8,
    /// `Pk_total`.
    pub pk_total: u8,
    /// `Pk_number`.
    pub pk_number: u8,
    /// The concatenation reference from the UDH, if any.
    pub reference: Option<u16>,
    /// This segment's text, UDH removed, decoded by `Msg_Fmt`.
    pub text: String,
    /// `Registered_Delivery == 1`.
    pub registered_delivery: bool,
    /// When it arrived.
    pub received_at: SystemTime,
}

/// A whole message as it would reach the handset (long messages reassembled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSms {
    /// Destinations.
    pub to: Vec<String>,
    /// `Src_Id` (the number the handset shows).
    pub src_id: String,
    /// The complete text.
    pub text: String,
    /// The `Msg_Id` of each segment, in segment order.
    pub msg_ids: Vec<u64>,
    /// When the last segment arrived.
    pub received_at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    Stopped,
}

type PartKey = (String, u16, u8);

struct Partial {
    msg_fmt: u8,
    src_id: String,
    to: Vec<String>,
    parts: Vec<Option<(Vec<u8>, u64)>>,
}

struct State {
    conns: HashMap<u64, mpsc::UnboundedSender<Frame>>,
    next_conn: u64,
    seq: u32,
    last_msg_id: u64,
    msg_seq: u16,
    submit_result: Option<(u8, usize)>,
    response_delay: Duration,
    report_stat: String,
    submits: Vec<SubmitRecord>,
    received: Vec<ReceivedSms>,
    partial: HashMap<PartKey, Partial>,
    /// DELIVERs sent and not yet answered, by connection and sequence id.
    unanswered: HashMap<(u64, u32), Deliver>,
    /// DELIVERs that found no connection, or whose connection closed before
    /// answering them: a gateway sends them again on the next login.
    to_resend: Vec<Deliver>,
    /// The DELIVERs of the last mobile-originated message, to send again.
    last_mo: Vec<Deliver>,
    in_flight: usize,
    max_in_flight: usize,
    active_test_resps: usize,
    deliver_resps: usize,
    logins: usize,
    auth_failures: usize,
    unresponsive: bool,
}

struct Shared {
    config: CmppSimConfig,
    state: Mutex<State>,
    mode: watch::Sender<Mode>,
    submit_count: watch::Sender<usize>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl State {
    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// A unique `Msg_Id` in the ISMG layout (time, gateway code, sequence).
    fn next_msg_id(&mut self, gateway: u32) -> u64 {
        use chrono::{Datelike, Timelike};
        let now = Utc::now().with_timezone(&china_offset());
        self.msg_seq = self.msg_seq.wrapping_add(1);
        let id = compose_msg_id(
            now.month(),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            gateway,
            self.msg_seq,
        );
        let id = if id <= self.last_msg_id {
            self.last_msg_id + 1
        } else {
            id
        };
        self.last_msg_id = id;
        id
    }

    /// Sends to connection `preferred` if it is still there, else to the newest connection.
    /// Sends each DELIVER in a frame of its own to the newest connection.
    fn send_delivers(&mut self, delivers: Vec<Deliver>) -> Result<()> {
        for deliver in delivers {
            if !self.deliver(None, deliver) {
                return Err(Error::LinkDown);
            }
        }
        Ok(())
    }

    /// Sends a DELIVER to connection `preferred` if it is still there, else
    /// to the newest connection, and keeps it until it is answered; false
    /// when no connection is there.
    fn deliver(&mut self, preferred: Option<u64>, deliver: Deliver) -> bool {
        let target = preferred
            .filter(|id| self.conns.contains_key(id))
            .or_else(|| self.conns.keys().max().copied());
        let seq = self.next_seq();
        match target.and_then(|id| self.conns.get(&id).map(|tx| (id, tx))) {
            Some((id, tx)) if tx.send(Frame::new(seq, Pdu::Deliver(deliver.clone()))).is_ok() => {
                self.unanswered.insert((id, seq), deliver);
                true
            }
            _ => false,
        }
    }

    /// Connection `id` is gone: what it left unanswered goes out again on
    /// the next login, in the order it was first sent.
    fn closed(&mut self, id: u64) {
        self.conns.remove(&id);
        let mut left: Vec<_> = self.unanswered.extract_if(|(conn, _), _| *conn == id).collect();
        left.sort_by_key(|((_, seq), _)| *seq);
        self.to_resend.extend(left.into_iter().map(|(_, d)| d));
    }

    /// Every connection is gone.
    fn close_all(&mut self) {
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.closed(id);
        }
    }
}

/// A simulated CMPP 2.0 gateway.
///
/// It authenticates CONNECT (wrong secret: status 3 and close; wrong SP id: 2; version other
/// than 2.0: 4), answers SUBMIT with unique `Msg_Id`s, records every SUBMIT and reassembles long
/// messages, sends status reports after `report_delay`, answers and sends ACTIVE_TEST, and offers
/// failure controls. A DELIVER (report or mobile-originated) left unanswered by a connection that
/// closed goes out again on the next login, as a gateway sends it again. Dropping it stops it.
pub struct CmppSimulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for CmppSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CmppSimulator")
            .field("addr", &self.addr)
            .finish()
    }
}

impl CmppSimulator {
    /// Binds and starts serving.
    pub async fn start(config: CmppSimConfig) -> Result<CmppSimulator> {
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(State {
                conns: HashMap::new(),
                next_conn: 0,
                seq: 0,
                last_msg_id: 0,
                msg_seq: 0,
                submit_result: None,
                response_delay: Duration::ZERO,
                report_stat: "DELIVRD".into(),
                submits: Vec::new(),
                received: Vec::new(),
                partial: HashMap::new(),
                unanswered: HashMap::new(),
                to_resend: Vec::new(),
                last_mo: Vec::new(),
                in_flight: 0,
                max_in_flight: 0,
                active_test_resps: 0,
                deliver_resps: 0,
                logins: 0,
                auth_failures: 0,
                unresponsive: false,
            }),
            mode: watch::channel(Mode::Up).0,
            submit_count: watch::channel(0).0,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        info!(%addr, "CMPP simulator listening");
        Ok(CmppSimulator {
            addr,
            shared,
            accept,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every SUBMIT received so far, in arrival order.
    pub fn submits(&self) -> Vec<SubmitRecord> {
        self.shared.state().submits.clone()
    }

    /// Complete messages accepted so far (long messages once all segments are in).
    pub fn received(&self) -> Vec<ReceivedSms> {
        self.shared.state().received.clone()
    }

    /// How many SUBMITs arrived so far.
    pub fn submits_received(&self) -> usize {
        *self.shared.submit_count.borrow()
    }

    /// Waits until at least `n` SUBMITs arrived; returns whether that happened within `wait`.
    pub async fn wait_for_submits(&self, n: usize, wait: Duration) -> bool {
        let mut rx = self.shared.submit_count.subscribe();
        matches!(
            tokio::time::timeout(wait, rx.wait_for(|count| *count >= n)).await,
            Ok(Ok(_))
        )
    }

    /// Answer the next `count` SUBMITs with `result` (e.g. 8 for flow control) instead of 0.
    pub fn set_submit_result(&self, result: u8, count: usize) {
        self.shared.state().submit_result = Some((result, count));
    }

    /// Delay every SUBMIT_RESP by `delay`.
    pub fn set_response_delay(&self, delay: Duration) {
        self.shared.state().response_delay = delay;
    }

    /// The `Stat` of future status reports (default `DELIVRD`).
    pub fn set_report_stat(&self, stat: &str) {
        self.shared.state().report_stat = stat.to_owned();
    }

    /// `true`: logged-in connections stay open but nothing on them is answered any more and the
    /// simulator sends nothing (a hung gateway); new logins still succeed. `false`: back to normal.
    pub fn set_unresponsive(&self, unresponsive: bool) {
        self.shared.state().unresponsive = unresponsive;
    }

    /// `true`: close all connections and refuse new ones; `false`: accept again.
    pub fn set_down(&self, down: bool) {
        if self.shared.mode() == Mode::Stopped {
            return;
        }
        self.shared
            .mode
            .send_replace(if down { Mode::Down } else { Mode::Up });
        if down {
            self.shared.state().close_all();
        }
    }

    /// Sends a mobile-originated message from `from` to a connected client (long text is split
    /// into concatenated parts). Fails when no client is logged in.
    pub fn inject_mo(&self, from: &str, text: &str) -> Result<()> {
        let mut st = self.shared.state();
        if st.conns.is_empty() {
            return Err(Error::LinkDown);
        }
        let reference = st.msg_seq as u8;
        let mut delivers = Vec::new();
        for seg in split_message(text, reference)? {
            let msg_id = st.next_msg_id(self.shared.config.gateway_code);
            let deliver = Deliver {
                msg_id,
                dest_id: self.shared.config.service_number.clone(),
                service_id: String::new(),
                tp_pid: 0,
                tp_udhi: seg.tp_udhi,
                msg_fmt: seg.msg_fmt,
                src_terminal_id: from.to_owned(),
                registered_delivery: 0,
                msg_content: seg.content,
                reserve: [0; 8],
            };
            delivers.push(deliver);
        }
        st.last_mo = delivers.clone();
        st.send_delivers(delivers)
    }

    /// Sends the last mobile-originated message's DELIVERs again, with the
    /// same `Msg_Id`s and new sequence ids, as a gateway does when it did not
    /// see the DELIVER_RESP in time. Fails when no client is logged in or no
    /// message was injected.
    pub fn redeliver_last_mo(&self) -> Result<()> {
        let mut st = self.shared.state();
        if st.last_mo.is_empty() {
            return Err(Error::LinkDown);
        }
        let delivers = st.last_mo.clone();
        st.send_delivers(delivers)
    }

    /// Logged-in client connections.
    pub fn connections(&self) -> usize {
        self.shared.state().conns.len()
    }

    /// Successful logins so far.
    pub fn logins(&self) -> usize {
        self.shared.state().logins
    }

    /// Refused logins so far.
    pub fn auth_failures(&self) -> usize {
        self.shared.state().auth_failures
    }

    /// The most SUBMITs that were awaiting their SUBMIT_RESP at one time.
    pub fn max_in_flight(&self) -> usize {
        self.shared.state().max_in_flight
    }

    /// DELIVER_RESPs received (acknowledged reports and MO messages).
    pub fn deliver_resps_received(&self) -> usize {
        self.shared.state().deliver_resps
    }

    /// ACTIVE_TEST_RESPs received in answer to the simulator's ACTIVE_TESTs.
    pub fn active_test_resps_received(&self) -> usize {
        self.shared.state().active_test_resps
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        self.shared.mode.send_replace(Mode::Stopped);
        self.shared.state().close_all();
        self.accept.abort();
    }
}

impl Drop for CmppSimulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Resolves once the mode satisfies `pred` (or the simulator is gone).
async fn until(rx: &mut watch::Receiver<Mode>, pred: impl Fn(Mode) -> bool) {
    let _ = rx.wait_for(|m| pred(*m)).await;
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut mode = shared.mode.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                match shared.mode() {
                    Mode::Up => {
                        tokio::spawn(serve_connection(shared.clone(), stream));
                    }
                    Mode::Down => debug!(%peer, "simulator is down; refusing connection"),
                    Mode::Stopped => return,
                }
            }
            _ = until(&mut mode, |m| m == Mode::Stopped) => return,
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let mut writer_mode = shared.mode.subscribe();
    let writer_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = rx.recv() => {
                    let Some(frame) = frame else { break };
                    let Ok(bytes) = frame.encode() else { continue };
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                _ = until(&mut writer_mode, |m| m != Mode::Up) => break,
            }
        }
        let _ = writer.shutdown().await;
    });

    let mut conn = Conn {
        shared: shared.clone(),
        tx,
        id: None,
        decoder: FrameDecoder::new(),
    };
    conn.run(&mut reader).await;
    if let Some(id) = conn.id {
        conn.shared.state().closed(id);
    }
    drop(conn); // drops our sender; the writer drains what is queued and closes
    let _ = writer_task.await;
}

struct Conn {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Frame>,
    id: Option<u64>,
    decoder: FrameDecoder,
}

enum Flow {
    Continue,
    Close,
}

impl Conn {
    async fn run(&mut self, reader: &mut tokio::net::tcp::OwnedReadHalf) {
        let mut mode = self.shared.mode.subscribe();
        let at_period = self
            .shared
            .config
            .active_test_interval
            .unwrap_or(Duration::from_secs(3600));
        let mut active_test =
            tokio::time::interval_at(tokio::time::Instant::now() + at_period, at_period);
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => {
                    let n = match read {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    self.decoder.extend(&buf[..n]);
                    loop {
                        match self.decoder.next_pdu() {
                            Ok(Some(Decoded::Frame(frame))) => {
                                if let Flow::Close = self.on_frame(frame) {
                                    return;
                                }
                            }
                            Ok(Some(Decoded::Malformed(bad))) => {
                                debug!(error = %bad.error, "simulator got a malformed PDU");
                                if bad.command_id == command::SUBMIT {
                                    let resp = MsgResp { msg_id: 0, result: 1 };
                                    let _ = self.tx.send(Frame::new(bad.sequence_id, Pdu::SubmitResp(resp)));
                                }
                            }
                            Ok(None) => break,
                            Err(_) => return,
                        }
                    }
                }
                _ = until(&mut mode, |m| m != Mode::Up) => return,
                _ = active_test.tick(), if self.id.is_some() && self.shared.config.active_test_interval.is_some() => {
                    let mut st = self.shared.state();
                    if !st.unresponsive {
                        let seq = st.next_seq();
                        let _ = self.tx.send(Frame::new(seq, Pdu::ActiveTest));
                    }
                }
            }
        }
    }

    fn on_frame(&mut self, frame: Frame) -> Flow {
        let seq = frame.sequence_id;
        if self.id.is_none() {
            return match frame.pdu {
                Pdu::Connect(connect) => self.login(seq, &connect),
                _ => Flow::Close, // anything before CONNECT: drop the client
            };
        }
        if self.shared.state().unresponsive {
            return Flow::Continue;
        }
        match frame.pdu {
            Pdu::Submit(submit) => self.on_submit(seq, submit),
            Pdu::ActiveTest => {
                let _ = self.tx.send(Frame::new(seq, Pdu::ActiveTestResp));
            }
            Pdu::ActiveTestResp => self.shared.state().active_test_resps += 1,
            Pdu::DeliverResp(_) => {
                let mut st = self.shared.state();
                st.deliver_resps += 1;
                if let Some(id) = self.id {
                    st.unanswered.remove(&(id, seq));
                }
            }
            Pdu::Terminate => {
                let _ = self.tx.send(Frame::new(seq, Pdu::TerminateResp));
                return Flow::Close;
            }
            other => debug!(pdu = other.name(), "simulator ignores PDU"),
        }
        Flow::Continue
    }

    fn login(&mut self, seq: u32, connect: &Connect) -> Flow {
        let cfg = &self.shared.config;
        let status = if connect.version != CMPP_VERSION_2_0 {
            4
        } else if connect.source_addr != cfg.sp_id {
            2
        } else if !connect.verify(cfg.secret.expose()) {
            3
        } else {
            0
        };
        let resp = ConnectResp::new(status, connect, cfg.secret.expose());
        let _ = self.tx.send(Frame::new(seq, Pdu::ConnectResp(resp)));
        let mut st = self.shared.state();
        if status != 0 {
            st.auth_failures += 1;
            return Flow::Close;
        }
        st.logins += 1;
        st.next_conn += 1;
        let id = st.next_conn;
        st.conns.insert(id, self.tx.clone());
        self.id = Some(id);
        // DELIVERs that found no connection, or were left unanswered by
        // one that closed, go out again now.
        for deliver in std::mem::take(&mut st.to_resend) {
            st.deliver(Some(id), deliver);
        }
        Flow::Continue
    }

    fn on_submit(&mut self, seq: u32, submit: Submit) {
        let shared = self.shared.clone();
        let cfg = &shared.config;
        let (concat, payload) = if submit.tp_udhi == 1 {
            match split_udh(&submit.msg_content) {
                Ok((c, p)) => (c, p.to_vec()),
                Err(_) => (None, Vec::new()),
            }
        } else {
            (None, submit.msg_content.clone())
        };
        let structure_ok = !submit.dest_terminal_ids.is_empty()
            && submit.pk_number >= 1
            && submit.pk_number <= submit.pk_total
            && (submit.tp_udhi == 0 || split_udh(&submit.msg_content).is_ok());

        let mut st = shared.state();
        let result = if !structure_ok {
            1
        } else {
            match st.submit_result {
                Some((result, n)) if n > 0 => {
                    st.submit_result = if n > 1 { Some((result, n - 1)) } else { None };
                    result
                }
                _ => 0,
            }
        };
        let msg_id = if result == 0 {
            st.next_msg_id(cfg.gateway_code)
        } else {
            0
        };
        let now = SystemTime::now();
        st.submits.push(SubmitRecord {
            sequence_id: seq,
            msg_id,
            result,
            dest_terminal_ids: submit.dest_terminal_ids.clone(),
            src_id: submit.src_id.clone(),
            service_id: submit.service_id.clone(),
            msg_fmt: submit.msg_fmt,
            tp_udhi: submit.tp_udhi,
            pk_total: submit.pk_total,
            pk_number: submit.pk_number,
            reference: concat.map(|c| c.reference),
            text: decode_text(submit.msg_fmt, &payload),
            registered_delivery: submit.registered_delivery == 1,
            received_at: now,
        });
        if result == 0 {
            record_received(
                &mut st,
                &submit,
                concat.map(|c| (c.reference, c.total, c.seq)),
                payload,
                msg_id,
                now,
            );
        }
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        let delay = st.response_delay;
        let stat = st.report_stat.clone();
        drop(st);
        shared.submit_count.send_modify(|c| *c += 1);

        let resp = Frame::new(seq, Pdu::SubmitResp(MsgResp { msg_id, result }));
        if delay.is_zero() {
            let _ = self.tx.send(resp);
            shared.state().in_flight -= 1;
        } else {
            let tx = self.tx.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(resp);
                shared.state().in_flight -= 1;
            });
        }

        if result == 0 && submit.registered_delivery == 1 {
            let conn_id = self.id;
            let shared = shared.clone();
            let wait = delay + cfg.report_delay;
            let submit_time = cmpp_minute_time();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                send_reports(&shared, conn_id, &submit, msg_id, &stat, &submit_time);
            });
        }
    }
}

/// `YYMMDDHHMM` in UTC+8, the time format of status reports.
fn cmpp_minute_time() -> String {
    Utc::now()
        .with_timezone(&china_offset())
        .format("%y%m%d%H%M")
        .to_string()
}

fn send_reports(
    shared: &Shared,
    conn_id: Option<u64>,
    submit: &Submit,
    msg_id: u64,
    stat: &str,
    submit_time: &str,
) {
    let done_time = cmpp_minute_time();
    let mut st = shared.state();
    for dest in &submit.dest_terminal_ids {
        let report = StatusReport {
            msg_id,
            stat: stat.chars().take(7).collect(),
            submit_time: submit_time.to_owned(),
            done_time: done_time.clone(),
            dest_terminal_id: dest.clone(),
            smsc_sequence: st.next_seq(),
        };
        let Ok(content) = report.encode() else {
            continue;
        };
        let deliver = Deliver {
            msg_id: st.next_msg_id(shared.config.gateway_code),
            dest_id: submit.src_id.clone(),
            service_id: submit.service_id.clone(),
            tp_pid: 0,
            tp_udhi: 0,
            msg_fmt: 0,
            src_terminal_id: dest.clone(),
            registered_delivery: 1,
            msg_content: content,
            reserve: [0; 8],
        };
        if !st.deliver(conn_id, deliver.clone()) {
            st.to_resend.push(deliver);
        }
    }
}

fn record_received(
    st: &mut State,
    submit: &Submit,
    concat: Option<(u16, u8, u8)>,
    payload: Vec<u8>,
    msg_id: u64,
    now: SystemTime,
) {
    let Some((reference, total, seq)) = concat.filter(|c| c.1 > 1) else {
        st.received.push(ReceivedSms {
            to: submit.dest_terminal_ids.clone(),
            src_id: submit.src_id.clone(),
            text: decode_text(submit.msg_fmt, &payload),
            msg_ids: vec![msg_id],
            received_at: now,
        });
        return;
    };
    let key = (submit.dest_terminal_ids.join(","), reference, total);
    let partial = st.partial.entry(key.clone()).or_insert_with(|| Partial {
        msg_fmt: submit.msg_fmt,
        src_id: submit.src_id.clone(),
        to: submit.dest_terminal_ids.clone(),
        parts: vec![None; total as usize],
    });
    if let Some(slot) = partial.parts.get_mut(seq as usize - 1) {
        *slot = Some((payload, msg_id));
    }
    if partial.parts.iter().all(Option::is_some)
        && let Some(done) = st.partial.remove(&key)
    {
        let mut bytes = Vec::new();
        let mut msg_ids = Vec::new();
        for (part, id) in done.parts.into_iter().flatten() {
            bytes.extend_from_slice(&part);
            msg_ids.push(id);
        }
        st.received.push(ReceivedSms {
            to: done.to,
            src_id: done.src_id,
            text: decode_text(done.msg_fmt, &bytes),
            msg_ids,
            received_at: now,
        });
    }
}
