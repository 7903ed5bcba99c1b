//! CMPP 2.0 framing: the 12-byte header, whole-PDU encoding and a streaming decoder.

use crate::error::{Error, Result};
use crate::pdu::{Connect, ConnectResp, Deliver, MsgResp, Submit};
use crate::wire::{Reader, Writer};

/// Length of the CMPP header (`Total_Length`, `Command_Id`, `Sequence_Id`).
pub const HEADER_LEN: usize = 12;
/// The largest PDU this crate accepts; a SUBMIT to 100 numbers is about 2.4 KiB.
pub const MAX_PDU_LEN: usize = 4096;

/// CMPP command ids. A response's id is its request's id with the top bit set.
pub mod command {
    /// Bit set in every response's `Command_Id`.
    pub const RESP: u32 = 0x8000_0000;
    /// CMPP_CONNECT.
    pub const CONNECT: u32 = 0x0000_0001;
    /// CMPP_TERMINATE.
    pub const TERMINATE: u32 = 0x0000_0002;
    /// CMPP_SUBMIT.
    pub const SUBMIT: u32 = 0x0000_0004;
    /// CMPP_DELIVER.
    pub const DELIVER: u32 = 0x0000_0005;
    /// CMPP_QUERY.
    pub const QUERY: u32 = 0x0000_0006;
    /// CMPP_CANCEL.
    pub const CANCEL: u32 = 0x0000_0007;
    /// CMPP_ACTIVE_TEST.
    pub const ACTIVE_TEST: u32 = 0x0000_0008;
    /// CMPP_CONNECT_RESP.
    pub const CONNECT_RESP: u32 = CONNECT | RESP;
    /// CMPP_TERMINATE_RESP.
    pub const TERMINATE_RESP: u32 = TERMINATE | RESP;
    /// CMPP_SUBMIT_RESP.
    pub const SUBMIT_RESP: u32 = SUBMIT | RESP;
    /// CMPP_DELIVER_RESP.
    pub const DELIVER_RESP: u32 = DELIVER | RESP;
    /// CMPP_ACTIVE_TEST_RESP.
    pub const ACTIVE_TEST_RESP: u32 = ACTIVE_TEST | RESP;
}

/// A decoded PDU body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu {
    /// CMPP_CONNECT.
    Connect(Connect),
    /// CMPP_CONNECT_RESP.
    ConnectResp(ConnectResp),
    /// CMPP_TERMINATE (no body).
    Terminate,
    /// CMPP_TERMINATE_RESP (no body).
    TerminateResp,
    /// CMPP_SUBMIT.
    Submit(Submit),
    /// CMPP_SUBMIT_RESP.
    SubmitResp(MsgResp),
    /// CMPP_DELIVER.
    Deliver(Deliver),
    /// CMPP_DELIVER_RESP.
    DeliverResp(MsgResp),
    /// CMPP_ACTIVE_TEST (no body).
    ActiveTest,
    /// CMPP_ACTIVE_TEST_RESP (`Reserved`, one octet).
    ActiveTestResp,
    /// A well-framed PDU of a command this crate does not interpret (QUERY, CANCEL, …).
    Unknown {
        /// Its `Command_Id`.
        command_id: u32,
        /// Its raw body.
        body: Vec<u8>,
    },
}

impl Pdu {
    /// The `Command_Id` for this PDU.
    pub fn command_id(&self) -> u32 {
        use command::*;
        match self {
            Pdu::Connect(_) => CONNECT,
            Pdu::ConnectResp(_) => CONNECT_RESP,
            Pdu::Terminate => TERMINATE,
            Pdu::TerminateResp => TERMINATE_RESP,
            Pdu::Submit(_) => SUBMIT,
            Pdu::SubmitResp(_) => SUBMIT_RESP,
            Pdu::Deliver(_) => DELIVER,
            Pdu::DeliverResp(_) => DELIVER_RESP,
            Pdu::ActiveTest => ACTIVE_TEST,
            Pdu::ActiveTestResp => ACTIVE_TEST_RESP,
            Pdu::Unknown { command_id, .. } => *command_id,
        }
    }

    /// The PDU's CMPP name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Pdu::Connect(_) => "CONNECT",
            Pdu::ConnectResp(_) => "CONNECT_RESP",
            Pdu::Terminate => "TERMINATE",
            Pdu::TerminateResp => "TERMINATE_RESP",
            Pdu::Submit(_) => "SUBMIT",
            Pdu::SubmitResp(_) => "SUBMIT_RESP",
            Pdu::Deliver(_) => "DELIVER",
            Pdu::DeliverResp(_) => "DELIVER_RESP",
            Pdu::ActiveTest => "ACTIVE_TEST",
            Pdu::ActiveTestResp => "ACTIVE_TEST_RESP",
            Pdu::Unknown { .. } => "UNKNOWN",
        }
    }

    fn encode_body(&self, w: &mut Writer) -> Result<()> {
        match self {
            Pdu::Connect(p) => p.encode(w)?,
            Pdu::ConnectResp(p) => p.encode(w),
            Pdu::Terminate | Pdu::TerminateResp | Pdu::ActiveTest => {}
            Pdu::Submit(p) => p.encode(w)?,
            Pdu::SubmitResp(p) | Pdu::DeliverResp(p) => p.encode(w),
            Pdu::Deliver(p) => p.encode(w)?,
            Pdu::ActiveTestResp => w.u8(0),
            Pdu::Unknown { body, .. } => w.bytes(body),
        }
        Ok(())
    }

    fn decode_body(command_id: u32, body: &[u8]) -> Result<Self> {
        use command::*;
        let empty = |pdu: Pdu| {
            if body.is_empty() {
                Ok(pdu)
            } else {
                Err(Error::Malformed(format!(
                    "{} must have an empty body, got {} octets",
                    pdu.name(),
                    body.len()
                )))
            }
        };
        match command_id {
            CONNECT => Ok(Pdu::Connect(Connect::decode(body)?)),
            CONNECT_RESP => Ok(Pdu::ConnectResp(ConnectResp::decode(body)?)),
            TERMINATE => empty(Pdu::Terminate),
            TERMINATE_RESP => empty(Pdu::TerminateResp),
            SUBMIT => Ok(Pdu::Submit(Submit::decode(body)?)),
            SUBMIT_RESP => Ok(Pdu::SubmitResp(MsgResp::decode(body, "SUBMIT_RESP")?)),
            DELIVER => Ok(Pdu::Deliver(Deliver::decode(body)?)),
            DELIVER_RESP => Ok(Pdu::DeliverResp(MsgResp::decode(body, "DELIVER_RESP")?)),
            ACTIVE_TEST => empty(Pdu::ActiveTest),
            // The specification gives a one-octet Reserved field; some gateways send none.
            ACTIVE_TEST_RESP if body.len() <= 1 => Ok(Pdu::ActiveTestResp),
            ACTIVE_TEST_RESP => Err(Error::Malformed(format!(
                "ACTIVE_TEST_RESP body of {} octets",
                body.len()
            ))),
            _ => Ok(Pdu::Unknown {
                command_id,
                body: body.to_vec(),
            }),
        }
    }
}

/// A PDU with its sequence id: one complete CMPP message on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `Sequence_Id`: matches a response to its request.
    pub sequence_id: u32,
    /// The body.
    pub pdu: Pdu,
}

impl Frame {
    /// A frame for `pdu` with the given sequence id.
    pub fn new(sequence_id: u32, pdu: Pdu) -> Self {
        Frame { sequence_id, pdu }
    }

    /// The complete wire bytes, header included.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        w.u32(0); // Total_Length, patched below
        w.u32(self.pdu.command_id());
        w.u32(self.sequence_id);
        self.pdu.encode_body(&mut w)?;
        let mut out = w.into_inner();
        if out.len() > MAX_PDU_LEN {
            return Err(Error::InvalidLength(
                u32::try_from(out.len()).unwrap_or(u32::MAX),
            ));
        }
        let len = (out.len() as u32).to_be_bytes();
        out[..4].copy_from_slice(&len);
        Ok(out)
    }
}

/// Reads the header at the start of `buf`: `Ok(None)` if fewer than 12 bytes, otherwise the
/// validated `(Total_Length, Command_Id, Sequence_Id)`.
fn peek_header(buf: &[u8]) -> Result<Option<(usize, u32, u32)>> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut r = Reader::new(&buf[..HEADER_LEN]);
    let total = r.u32("Total_Length")?;
    let command_id = r.u32("Command_Id")?;
    let sequence_id = r.u32("Sequence_Id")?;
    let len = total as usize;
    if !(HEADER_LEN..=MAX_PDU_LEN).contains(&len) {
        return Err(Error::InvalidLength(total));
    }
    Ok(Some((len, command_id, sequence_id)))
}

/// Decodes the PDU at the start of `buf`: `Ok(None)` means more bytes are needed, otherwise the
/// frame and how many bytes of `buf` it occupied.
///
/// An [`Error::InvalidLength`] means the stream cannot be framed any more. Other errors mean the
/// PDU at the start of the buffer is malformed; [`FrameDecoder`] skips such PDUs and goes on.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>> {
    let Some((len, command_id, sequence_id)) = peek_header(buf)? else {
        return Ok(None);
    };
    if buf.len() < len {
        return Ok(None);
    }
    let pdu = Pdu::decode_body(command_id, &buf[HEADER_LEN..len])?;
    Ok(Some((Frame { sequence_id, pdu }, len)))
}

/// What [`FrameDecoder::next_pdu`] took off the stream.
#[derive(Debug)]
pub enum Decoded {
    /// A well-formed frame.
    Frame(Frame),
    /// A correctly framed PDU whose body could not be decoded; it has been skipped.
    Malformed(BadPdu),
}

/// A PDU whose framing was fine but whose body was not: its header, and why it failed.
#[derive(Debug)]
pub struct BadPdu {
    /// The header's `Command_Id`.
    pub command_id: u32,
    /// The header's `Sequence_Id`.
    pub sequence_id: u32,
    /// Why the body could not be decoded.
    pub error: Error,
    /// The body's first eight octets, big-endian, when it has them: the
    /// `Msg_Id` of a DELIVER, which its DELIVER_RESP must echo.
    pub msg_id: Option<u64>,
}

/// A streaming decoder: feed it bytes as they arrive, take complete frames out.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        FrameDecoder::default()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next PDU: `Ok(None)` when more bytes are needed.
    ///
    /// `Err` is a framing error ([`Error::InvalidLength`]): the stream is unusable and the
    /// connection should be closed.
    pub fn next_pdu(&mut self) -> Result<Option<Decoded>> {
        let Some((len, command_id, sequence_id)) = peek_header(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        let body = &self.buf[HEADER_LEN..len];
        let decoded = match Pdu::decode_body(command_id, body) {
            Ok(pdu) => Decoded::Frame(Frame { sequence_id, pdu }),
            Err(error) => Decoded::Malformed(BadPdu {
                command_id,
                sequence_id,
                error,
                msg_id: body.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes),
            }),
        };
        self.buf.drain(..len);
        Ok(Some(decoded))
    }
}
