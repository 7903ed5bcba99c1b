//! The connection task behind `CmppClient`: login, session loop, keepalive and reconnect.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior, timeout};
use tracing::{debug, info, warn};

use crate::auth::cmpp_timestamp_now;
use crate::client::CmppConfig;
use crate::codec::{BadPdu, Decoded, Frame, FrameDecoder, Pdu, command};
use crate::error::{Error, Result};
use crate::gateway::{Received, SmsEvent};
use crate::pdu::{Connect, Deliver, MsgResp, format_msg_id};
use crate::reassembly::{Reassembled, Reassembler};

/// Requests from client handles to the connection task.
pub(crate) enum Command {
    Submit(PendingSubmit),
    Shutdown(oneshot::Sender<()>),
}

/// A SUBMIT waiting to be written, with its window slot and where to send the answer.
pub(crate) struct PendingSubmit {
    pub(crate) submit: crate::pdu::Submit,
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) reply: oneshot::Sender<Result<MsgResp>>,
}

/// Sequence ids, never 0, wrapping.
#[derive(Default)]
pub(crate) struct Seq(u32);

impl Seq {
    pub(crate) fn next_id(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(1);
        if self.0 == 0 {
            self.0 = 1;
        }
        self.0
    }
}

/// A logged-in TCP connection and any bytes read past CONNECT_RESP.
pub(crate) struct Connection {
    stream: TcpStream,
    decoder: FrameDecoder,
}

const READ_CHUNK: usize = 4096;

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, frame: &Frame) -> Result<()> {
    let bytes = frame.encode()?;
    w.write_all(&bytes).await?;
    Ok(())
}

/// Reads until one well-formed frame is available (malformed PDUs are logged and skipped).
async fn read_frame<R: AsyncReadExt + Unpin>(
    r: &mut R,
    decoder: &mut FrameDecoder,
) -> Result<Frame> {
    let mut buf = [0u8; READ_CHUNK];
    loop {
        match decoder.next_pdu()? {
            Some(Decoded::Frame(frame)) => return Ok(frame),
            Some(Decoded::Malformed(bad)) => log_bad(&bad),
            None => {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    return Err(Error::ConnectionLost("connection closed by gateway".into()));
                }
                decoder.extend(&buf[..n]);
            }
        }
    }
}

fn log_bad(bad: &BadPdu) {
    warn!(
        command_id = format_args!("{:#010x}", bad.command_id),
        sequence_id = bad.sequence_id,
        error = %bad.error,
        "skipping malformed CMPP PDU"
    );
}

fn connect_status_text(status: u8) -> &'static str {
    match status {
        1 => "message structure error",
        2 => "illegal source address (SP id)",
        3 => "authentication failed",
        4 => "version too high",
        _ => "other error",
    }
}

/// Opens a TCP connection and performs CONNECT, verifying the gateway's authenticator.
pub(crate) async fn login(cfg: &CmppConfig, seq: &mut Seq) -> Result<Connection> {
    let mut stream = timeout(cfg.connect_timeout, TcpStream::connect(&cfg.addr))
        .await
        .map_err(|_| Error::Timeout(format!("TCP connect to {}", cfg.addr)))??;
    stream.set_nodelay(true)?;
    let connect = Connect::new(&cfg.sp_id, cfg.secret.expose(), cmpp_timestamp_now());
    let seq_id = seq.next_id();
    write_frame(
        &mut stream,
        &Frame::new(seq_id, Pdu::Connect(connect.clone())),
    )
    .await?;
    let mut decoder = FrameDecoder::new();
    let resp = timeout(cfg.connect_timeout, async {
        loop {
            let frame = read_frame(&mut stream, &mut decoder).await?;
            match frame.pdu {
                Pdu::ConnectResp(resp) => return Ok(resp),
                other => debug!(pdu = other.name(), "ignoring PDU before CONNECT_RESP"),
            }
        }
    })
    .await
    .map_err(|_| Error::Timeout("no CONNECT_RESP".into()))?
    .map_err(|e: Error| match e {
        Error::Io(io) => Error::ConnectionLost(format!("during login: {io}")),
        other => other,
    })?;
    if resp.status != 0 {
        return Err(Error::AuthFailed(format!(
            "CONNECT_RESP status {}: {}",
            resp.status,
            connect_status_text(resp.status)
        )));
    }
    if !resp.verify(&connect.authenticator_source, cfg.secret.expose()) {
        return Err(Error::AuthFailed(
            "gateway's AuthenticatorISMG does not match the shared secret".into(),
        ));
    }
    Ok(Connection { stream, decoder })
}

enum Outcome {
    Shutdown(Option<oneshot::Sender<()>>),
    Lost(Error),
}

/// The supervisor: runs sessions and reconnects with backoff until shut down.
pub(crate) async fn run(
    cfg: Arc<CmppConfig>,
    first: Option<Connection>,
    mut seq: Seq,
    mut commands: mpsc::Receiver<Command>,
    link: watch::Sender<bool>,
    events: mpsc::Sender<Received>,
    window: Arc<Semaphore>,
) {
    let min = cfg
        .reconnect_backoff_min
        .min(cfg.reconnect_backoff_max)
        .max(Duration::from_millis(1));
    let mut backoff = min;
    let mut next = first;
    let ack = loop {
        let conn = match next.take() {
            Some(conn) => conn,
            None => match login(&cfg, &mut seq).await {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(addr = %cfg.addr, error = %e, retry_in = ?backoff, "CMPP login failed");
                    if let Some(ack) = idle(&mut commands, jitter(backoff)).await {
                        break ack;
                    }
                    backoff = (backoff * 2).min(cfg.reconnect_backoff_max.max(min));
                    continue;
                }
            },
        };
        info!(addr = %cfg.addr, sp_id = %cfg.sp_id, "CMPP link up");
        backoff = min;
        link.send_replace(true);
        // Answers for this connection only: a DELIVER stored after it was
        // lost is answered by the gateway sending it again on the next one.
        let (answers, mut stored) = mpsc::unbounded_channel();
        let outcome = Session::new(&cfg, &mut seq, &events, answers)
            .run(conn, &mut commands, &mut stored)
            .await;
        link.send_replace(false);
        match outcome {
            Outcome::Shutdown(ack) => break ack,
            Outcome::Lost(e) => {
                warn!(addr = %cfg.addr, error = %e, "CMPP link lost; reconnecting");
                if let Some(ack) = idle(&mut commands, jitter(min)).await {
                    break ack;
                }
            }
        }
    };
    window.close();
    commands.close();
    while let Ok(cmd) = commands.try_recv() {
        match cmd {
            Command::Submit(p) => {
                let _ = p.reply.send(Err(Error::Closed));
            }
            Command::Shutdown(a) => {
                let _ = a.send(());
            }
        }
    }
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
    info!(addr = %cfg.addr, "CMPP client stopped");
}

/// Waits `delay` while the link is down, refusing submits; `Some` means shut down (with its ack).
async fn idle(
    commands: &mut mpsc::Receiver<Command>,
    delay: Duration,
) -> Option<Option<oneshot::Sender<()>>> {
    let until = Instant::now() + delay;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return None,
            cmd = commands.recv() => match cmd {
                None => return Some(None),
                Some(Command::Shutdown(ack)) => return Some(Some(ack)),
                Some(Command::Submit(p)) => {
                    let _ = p.reply.send(Err(Error::LinkDown));
                }
            },
        }
    }
}

fn jitter(d: Duration) -> Duration {
    let factor: f64 = rand::thread_rng().gen_range(0.5..=1.0);
    d.mul_f64(factor)
}

/// How long the parts of a long incoming message wait for the rest before
/// what came is handed over (marked incomplete): less than the minute a
/// gateway commonly waits for a DELIVER_RESP before sending a DELIVER again.
const MO_PART_TTL: Duration = Duration::from_secs(50);

/// A held part of a long incoming message: its DELIVER, to answer.
#[derive(Debug)]
struct Part {
    seq: u32,
    msg_id: u64,
    /// The service number it was sent to.
    to: String,
}

/// The incoming-message event of a reassembled message, with its parts'
/// DELIVERs. Its id is that of the part that came last: the same when the
/// gateway sends the message again, so it is stored once.
fn incoming(m: Reassembled<Part>) -> (SmsEvent, Vec<(u32, u64)>) {
    let last = m.held.last();
    let to = last.map(|p| p.to.clone()).unwrap_or_default();
    let msg_id = last.map(|p| format_msg_id(p.msg_id)).unwrap_or_default();
    let delivers = m.held.iter().map(|p| (p.seq, p.msg_id)).collect();
    (SmsEvent::Incoming { from: m.sender, to, text: m.text, msg_id }, delivers)
}

struct InFlight {
    reply: oneshot::Sender<Result<MsgResp>>,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
}

struct Session<'a> {
    cfg: &'a CmppConfig,
    seq: &'a mut Seq,
    events: &'a mpsc::Sender<Received>,
    /// Parts of long messages, unanswered until the whole message is stored.
    /// Of this connection only: the answers are, and parts left unanswered
    /// when it is lost come again on the next.
    reassembler: Reassembler<Part>,
    /// DELIVERs whose events were stored, to answer: (sequence id, Msg_Id).
    answers: mpsc::UnboundedSender<(u32, u64)>,
    pending: HashMap<u32, InFlight>,
    last_rx: Instant,
    last_active_test: Option<Instant>,
    unanswered_active_tests: u32,
}

impl<'a> Session<'a> {
    fn new(
        cfg: &'a CmppConfig,
        seq: &'a mut Seq,
        events: &'a mpsc::Sender<Received>,
        answers: mpsc::UnboundedSender<(u32, u64)>,
    ) -> Self {
        Session {
            cfg,
            seq,
            events,
            reassembler: Reassembler::new(MO_PART_TTL),
            answers,
            pending: HashMap::new(),
            last_rx: Instant::now(),
            last_active_test: None,
            unanswered_active_tests: 0,
        }
    }

    async fn run(
        mut self,
        conn: Connection,
        commands: &mut mpsc::Receiver<Command>,
        stored: &mut mpsc::UnboundedReceiver<(u32, u64)>,
    ) -> Outcome {
        let Connection {
            stream,
            mut decoder,
        } = conn;
        let (mut reader, mut writer) = stream.into_split();
        let outcome = self
            .serve(&mut reader, &mut writer, &mut decoder, commands, stored)
            .await;
        if let Outcome::Shutdown(_) = outcome {
            self.terminate(&mut reader, &mut writer, &mut decoder).await;
        }
        let lost = match &outcome {
            Outcome::Shutdown(_) => None,
            Outcome::Lost(e) => Some(e.to_string()),
        };
        for (_, inflight) in self.pending.drain() {
            let _ = inflight.reply.send(Err(match &lost {
                None => Error::Closed,
                Some(reason) => Error::ConnectionLost(reason.clone()),
            }));
        }
        outcome
    }

    async fn serve(
        &mut self,
        reader: &mut OwnedReadHalf,
        writer: &mut OwnedWriteHalf,
        decoder: &mut FrameDecoder,
        commands: &mut mpsc::Receiver<Command>,
        stored: &mut mpsc::UnboundedReceiver<(u32, u64)>,
    ) -> Outcome {
        let period = (self.cfg.active_test_interval.min(self.cfg.submit_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf = [0u8; READ_CHUNK];
        // Frames may already be buffered from the login exchange.
        if let Err(e) = self.drain_frames(writer, decoder).await {
            return Outcome::Lost(e);
        }
        loop {
            tokio::select! {
                read = reader.read(&mut buf) => {
                    match read {
                        Ok(0) => return Outcome::Lost(Error::ConnectionLost("closed by gateway".into())),
                        Ok(n) => decoder.extend(&buf[..n]),
                        Err(e) => return Outcome::Lost(e.into()),
                    }
                    if let Err(e) = self.drain_frames(writer, decoder).await {
                        return Outcome::Lost(e);
                    }
                }
                cmd = commands.recv() => match cmd {
                    None => return Outcome::Shutdown(None),
                    Some(Command::Shutdown(ack)) => return Outcome::Shutdown(Some(ack)),
                    Some(Command::Submit(p)) => {
                        if let Err(e) = self.submit(writer, p).await {
                            return Outcome::Lost(e);
                        }
                    }
                },
                _ = tick.tick() => {
                    if let Err(e) = self.on_tick(writer).await {
                        return Outcome::Lost(e);
                    }
                }
                Some((seq, msg_id)) = stored.recv() => {
                    let resp = MsgResp { msg_id, result: 0 };
                    if let Err(e) = write_frame(writer, &Frame::new(seq, Pdu::DeliverResp(resp))).await {
                        return Outcome::Lost(e);
                    }
                }
            }
        }
    }

    async fn drain_frames(
        &mut self,
        writer: &mut OwnedWriteHalf,
        decoder: &mut FrameDecoder,
    ) -> Result<()> {
        while let Some(item) = decoder.next_pdu()? {
            self.last_rx = Instant::now();
            self.unanswered_active_tests = 0;
            match item {
                Decoded::Frame(frame) => self.on_frame(writer, frame).await?,
                Decoded::Malformed(bad) => {
                    log_bad(&bad);
                    if bad.command_id == command::DELIVER {
                        // Answered all the same (Result 1, bad structure), or the
                        // gateway would send it again and again, holding up the
                        // replies and reports behind it.
                        let resp = MsgResp { msg_id: bad.msg_id.unwrap_or(0), result: 1 };
                        write_frame(writer, &Frame::new(bad.sequence_id, Pdu::DeliverResp(resp))).await?;
                    }
                    if bad.command_id == command::SUBMIT_RESP
                        && let Some(inflight) = self.pending.remove(&bad.sequence_id)
                    {
                        let _ = inflight.reply.send(Err(Error::Protocol(format!(
                            "malformed SUBMIT_RESP: {}",
                            bad.error
                        ))));
                    }
                }
            }
        }
        Ok(())
    }

    async fn on_frame(&mut self, writer: &mut OwnedWriteHalf, frame: Frame) -> Result<()> {
        let seq = frame.sequence_id;
        match frame.pdu {
            Pdu::SubmitResp(resp) => match self.pending.remove(&seq) {
                Some(inflight) => {
                    let _ = inflight.reply.send(Ok(resp));
                }
                None => debug!(seq, "SUBMIT_RESP for an unknown or timed-out SUBMIT"),
            },
            Pdu::Deliver(deliver) => {
                if let Some((event, delivers)) = self.deliver_event(writer, seq, &deliver).await? {
                    self.hand_over(writer, event, delivers).await?;
                }
            }
            Pdu::ActiveTest => {
                write_frame(writer, &Frame::new(seq, Pdu::ActiveTestResp)).await?;
            }
            Pdu::ActiveTestResp => {}
            Pdu::Terminate => {
                write_frame(writer, &Frame::new(seq, Pdu::TerminateResp)).await?;
                return Err(Error::ConnectionLost("gateway sent TERMINATE".into()));
            }
            other => debug!(pdu = other.name(), seq, "ignoring unexpected PDU"),
        }
        Ok(())
    }

    /// The event a DELIVER completes, with the DELIVERs to answer once it is
    /// stored; `None` for a part of a longer message, held unanswered until
    /// the rest comes, and for a DELIVER that does not parse, answered at once
    /// (or the gateway would send it again and again).
    async fn deliver_event(
        &mut self,
        writer: &mut OwnedWriteHalf,
        seq: u32,
        d: &Deliver,
    ) -> Result<Option<(SmsEvent, Vec<(u32, u64)>)>> {
        let event = if d.is_report() {
            d.report()
                .map(|report| {
                    Some((
                        SmsEvent::Report {
                            gateway_id: format_msg_id(report.msg_id),
                            delivered: report.delivered(),
                            stat: report.stat,
                            to: report.dest_terminal_id,
                            done_time: report.done_time,
                        },
                        vec![(seq, d.msg_id)],
                    ))
                })
                .inspect_err(|e| warn!(error = %e, "malformed status report"))
        } else {
            let part = Part { seq, msg_id: d.msg_id, to: d.dest_id.clone() };
            self.reassembler
                .push_held(&d.src_terminal_id, d.msg_fmt, d.tp_udhi, &d.msg_content, part, std::time::Instant::now())
                .map(|done| done.map(incoming))
                .inspect_err(|e| warn!(error = %e, from = %d.src_terminal_id, "malformed MO message"))
        };
        match event {
            Ok(event) => Ok(event),
            Err(_) => {
                let resp = MsgResp { msg_id: d.msg_id, result: 0 };
                write_frame(writer, &Frame::new(seq, Pdu::DeliverResp(resp))).await?;
                Ok(None)
            }
        }
    }

    /// Hands an event over to be stored; its DELIVERs are answered once it is
    /// (`Received::stored`), never if it is not: the gateway sends them again.
    async fn hand_over(
        &mut self,
        writer: &mut OwnedWriteHalf,
        event: SmsEvent,
        delivers: Vec<(u32, u64)>,
    ) -> Result<()> {
        let received = Received::new(event, self.answers.clone(), delivers.clone());
        if self.events.send(received).await.is_err() {
            // Nobody listens for events: nothing will store it.
            for (seq, msg_id) in delivers {
                let resp = MsgResp { msg_id, result: 0 };
                write_frame(writer, &Frame::new(seq, Pdu::DeliverResp(resp))).await?;
            }
        }
        Ok(())
    }

    async fn submit(&mut self, writer: &mut OwnedWriteHalf, p: PendingSubmit) -> Result<()> {
        if p.reply.is_closed() {
            return Ok(()); // the caller gave up; the permit is released here
        }
        let seq = self.seq.next_id();
        let bytes = match Frame::new(seq, Pdu::Submit(p.submit)).encode() {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = p.reply.send(Err(e));
                return Ok(());
            }
        };
        if let Err(e) = writer.write_all(&bytes).await {
            let _ = p
                .reply
                .send(Err(Error::ConnectionLost(format!("writing SUBMIT: {e}"))));
            return Err(e.into());
        }
        self.pending.insert(
            seq,
            InFlight {
                reply: p.reply,
                deadline: Instant::now() + self.cfg.submit_timeout,
                _permit: p.permit,
            },
        );
        Ok(())
    }

    async fn on_tick(&mut self, writer: &mut OwnedWriteHalf) -> Result<()> {
        let now = Instant::now();
        for late in self.reassembler.take_overdue(now.into_std()) {
            warn!(from = %late.sender, parts = late.held.len(), "a long MO message stayed incomplete; handing over the parts that came");
            let (event, delivers) = incoming(late);
            self.hand_over(writer, event, delivers).await?;
        }
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, f)| f.deadline <= now || f.reply.is_closed())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(inflight) = self.pending.remove(&seq) {
                let _ = inflight.reply.send(Err(Error::Timeout(format!(
                    "no SUBMIT_RESP within {:?}",
                    self.cfg.submit_timeout
                ))));
            }
        }
        let interval = self.cfg.active_test_interval;
        let idle = now.saturating_duration_since(self.last_rx) >= interval;
        let due = self
            .last_active_test
            .is_none_or(|t| now.saturating_duration_since(t) >= interval);
        if idle && due {
            if self.unanswered_active_tests >= self.cfg.max_missed_active_tests {
                return Err(Error::Timeout(format!(
                    "{} ACTIVE_TESTs unanswered",
                    self.unanswered_active_tests
                )));
            }
            let seq = self.seq.next_id();
            write_frame(writer, &Frame::new(seq, Pdu::ActiveTest)).await?;
            self.unanswered_active_tests += 1;
            self.last_active_test = Some(now);
        }
        Ok(())
    }

    async fn terminate(
        &mut self,
        reader: &mut OwnedReadHalf,
        writer: &mut OwnedWriteHalf,
        decoder: &mut FrameDecoder,
    ) {
        let seq = self.seq.next_id();
        if write_frame(writer, &Frame::new(seq, Pdu::Terminate))
            .await
            .is_err()
        {
            return;
        }
        let wait = self.cfg.connect_timeout.min(Duration::from_secs(2));
        let _ = timeout(wait, async {
            while let Ok(frame) = read_frame(reader, decoder).await {
                if frame.pdu == Pdu::TerminateResp {
                    break;
                }
            }
        })
        .await;
        let _ = writer.shutdown().await;
    }
}
