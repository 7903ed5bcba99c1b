//! CMPP 2.0 PDU bodies: their fields and byte layouts.

use crate::auth::{authenticator_ismg, authenticator_source};
use crate::error::{Error, Result};
use crate::wire::{Reader, Writer};

/// CMPP protocol version 2.0 as carried in CONNECT / CONNECT_RESP.
pub const CMPP_VERSION_2_0: u8 = 0x20;

/// CONNECT: the SP logs in to the gateway (ISMG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// `Source_Addr` (6): the SP id.
    pub source_addr: String,
    /// `AuthenticatorSource` (16), see [`authenticator_source`].
    pub authenticator_source: [u8; 16],
    /// `Version` (1): 0x20 for CMPP 2.0.
    pub version: u8,
    /// `Timestamp` (4): `MMDDHHMMSS` as a decimal number.
    pub timestamp: u32,
}

impl Connect {
    /// A CMPP 2.0 CONNECT with its authenticator computed from the shared secret.
    pub fn new(sp_id: &str, secret: &str, timestamp: u32) -> Self {
        Connect {
            source_addr: sp_id.to_owned(),
            authenticator_source: authenticator_source(sp_id, secret, timestamp),
            version: CMPP_VERSION_2_0,
            timestamp,
        }
    }

    /// Whether the authenticator proves knowledge of `secret`.
    pub fn verify(&self, secret: &str) -> bool {
        authenticator_source(&self.source_addr, secret, self.timestamp) == self.authenticator_source
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<()> {
        w.fixed_str(&self.source_addr, 6, "Source_Addr")?;
        w.bytes(&self.authenticator_source);
        w.u8(self.version);
        w.u32(self.timestamp);
        Ok(())
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let out = Connect {
            source_addr: r.fixed_str(6, "Source_Addr")?,
            authenticator_source: r.array::<16>("AuthenticatorSource")?,
            version: r.u8("Version")?,
            timestamp: r.u32("Timestamp")?,
        };
        r.finish("CONNECT")?;
        Ok(out)
    }
}

/// CONNECT_RESP (CMPP 2.0 layout: one-octet `Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectResp {
    /// `Status` (1): 0 ok, 1 bad structure, 2 illegal source address, 3 authentication failed,
    /// 4 version too high, 5+ other.
    pub status: u8,
    /// `AuthenticatorISMG` (16), see [`authenticator_ismg`].
    pub authenticator_ismg: [u8; 16],
    /// `Version` (1): the highest version the gateway supports.
    pub version: u8,
}

impl ConnectResp {
    /// A response to `connect` with its ISMG authenticator computed from the shared secret.
    pub fn new(status: u8, connect: &Connect, secret: &str) -> Self {
        ConnectResp {
            status,
            authenticator_ismg: authenticator_ismg(status, &connect.authenticator_source, secret),
            version: CMPP_VERSION_2_0,
        }
    }

    /// Whether the gateway's authenticator proves it knows `secret` (for our `authenticator_source`).
    pub fn verify(&self, authenticator_source: &[u8; 16], secret: &str) -> bool {
        authenticator_ismg(self.status, authenticator_source, secret) == self.authenticator_ismg
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u8(self.status);
        w.bytes(&self.authenticator_ismg);
        w.u8(self.version);
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let out = ConnectResp {
            status: r.u8("Status")?,
            authenticator_ismg: r.array::<16>("AuthenticatorISMG")?,
            version: r.u8("Version")?,
        };
        r.finish("CONNECT_RESP")?;
        Ok(out)
    }
}

/// SUBMIT: an SP sends one message segment to one or more mobiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    /// `Msg_Id` (8): 0 from the SP; the gateway assigns one.
    pub msg_id: u64,
    /// `Pk_total` (1): number of segments of this message.
    pub pk_total: u8,
    /// `Pk_number` (1): this segment's 1-based index.
    pub pk_number: u8,
    /// `Registered_Delivery` (1): 1 asks for a status report.
    pub registered_delivery: u8,
    /// `Msg_level` (1).
    pub msg_level: u8,
    /// `Service_Id` (10): the SP's service code.
    pub service_id: String,
    /// `Fee_UserType` (1): 0 charge destination, 1 source, 2 the SP, 3 `Fee_terminal_Id`.
    pub fee_user_type: u8,
    /// `Fee_terminal_Id` (21).
    pub fee_terminal_id: String,
    /// `TP_pId` (1).
    pub tp_pid: u8,
    /// `TP_udhi` (1): 1 when the content starts with a user data header.
    pub tp_udhi: u8,
    /// `Msg_Fmt` (1): 0 ASCII, 8 UCS-2, 15 GBK, see [`crate::MsgFmt`].
    pub msg_fmt: u8,
    /// `Msg_src` (6): the SP id.
    pub msg_src: String,
    /// `FeeType` (2): "01" free, "02" per message, …
    pub fee_type: String,
    /// `FeeCode` (6): fee in fen.
    pub fee_code: String,
    /// `ValId_Time` (17): validity period, empty for the gateway default.
    pub valid_time: String,
    /// `At_Time` (17): scheduled time, empty for immediately.
    pub at_time: String,
    /// `Src_Id` (21): the service number the mobile sees as sender.
    pub src_id: String,
    /// `Dest_terminal_Id` (21 each), preceded on the wire by `DestUsr_tl` (1).
    pub dest_terminal_ids: Vec<String>,
    /// `Msg_Content`, preceded on the wire by `Msg_Length` (1).
    pub msg_content: Vec<u8>,
    /// `Reserve` (8).
    pub reserve: [u8; 8],
}

impl Default for Submit {
    fn default() -> Self {
        Submit {
            msg_id: 0,
            pk_total: 1,
            pk_number: 1,
            registered_delivery: 0,
            msg_level: 0,
            service_id: String::new(),
            fee_user_type: 0,
            fee_terminal_id: String::new(),
            tp_pid: 0,
            tp_udhi: 0,
            msg_fmt: 0,
            msg_src: String::new(),
            fee_type: String::new(),
            fee_code: String::new(),
            valid_time: String::new(),
            at_time: String::new(),
            src_id: String::new(),
            dest_terminal_ids: Vec::new(),
            msg_content: Vec::new(),
            reserve: [0; 8],
        }
    }
}

/// The most destinations one CMPP 2.0 SUBMIT may carry.
pub const MAX_DEST_USR: usize = 100;

impl Submit {
    pub(crate) fn encode(&self, w: &mut Writer) -> Result<()> {
        w.u64(self.msg_id);
        w.u8(self.pk_total);
        w.u8(self.pk_number);
        w.u8(self.registered_delivery);
        w.u8(self.msg_level);
        w.fixed_str(&self.service_id, 10, "Service_Id")?;
        w.u8(self.fee_user_type);
        w.fixed_str(&self.fee_terminal_id, 21, "Fee_terminal_Id")?;
        w.u8(self.tp_pid);
        w.u8(self.tp_udhi);
        w.u8(self.msg_fmt);
        w.fixed_str(&self.msg_src, 6, "Msg_src")?;
        w.fixed_str(&self.fee_type, 2, "FeeType")?;
        w.fixed_str(&self.fee_code, 6, "FeeCode")?;
        w.fixed_str(&self.valid_time, 17, "ValId_Time")?;
        w.fixed_str(&self.at_time, 17, "At_Time")?;
        w.fixed_str(&self.src_id, 21, "Src_Id")?;
        if self.dest_terminal_ids.len() > MAX_DEST_USR {
            return Err(Error::FieldTooLong {
                field: "DestUsr_tl",
                max: MAX_DEST_USR,
            });
        }
        w.u8(self.dest_terminal_ids.len() as u8);
        for dest in &self.dest_terminal_ids {
            w.fixed_str(dest, 21, "Dest_terminal_Id")?;
        }
        write_content(w, &self.msg_content)?;
        w.bytes(&self.reserve);
        Ok(())
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let mut out = Submit {
            msg_id: r.u64("Msg_Id")?,
            pk_total: r.u8("Pk_total")?,
            pk_number: r.u8("Pk_number")?,
            registered_delivery: r.u8("Registered_Delivery")?,
            msg_level: r.u8("Msg_level")?,
            service_id: r.fixed_str(10, "Service_Id")?,
            fee_user_type: r.u8("Fee_UserType")?,
            fee_terminal_id: r.fixed_str(21, "Fee_terminal_Id")?,
            tp_pid: r.u8("TP_pId")?,
            tp_udhi: r.u8("TP_udhi")?,
            msg_fmt: r.u8("Msg_Fmt")?,
            msg_src: r.fixed_str(6, "Msg_src")?,
            fee_type: r.fixed_str(2, "FeeType")?,
            fee_code: r.fixed_str(6, "FeeCode")?,
            valid_time: r.fixed_str(17, "ValId_Time")?,
            at_time: r.fixed_str(17, "At_Time")?,
            src_id: r.fixed_str(21, "Src_Id")?,
            ..Submit::default()
        };
        let count = r.u8("DestUsr_tl")? as usize;
        if count > MAX_DEST_USR {
            return Err(Error::Malformed(format!(
                "SUBMIT: DestUsr_tl {count} > 100"
            )));
        }
        for _ in 0..count {
            out.dest_terminal_ids
                .push(r.fixed_str(21, "Dest_terminal_Id")?);
        }
        let len = r.u8("Msg_Length")? as usize;
        out.msg_content = r.bytes(len, "Msg_Content")?.to_vec();
        out.reserve = r.array::<8>("Reserve")?;
        r.finish("SUBMIT")?;
        Ok(out)
    }
}

fn write_content(w: &mut Writer, content: &[u8]) -> Result<()> {
    let len = u8::try_from(content.len()).map_err(|_| Error::FieldTooLong {
        field: "Msg_Content",
        max: 255,
    })?;
    w.u8(len);
    w.bytes(content);
    Ok(())
}

/// SUBMIT_RESP and DELIVER_RESP share one layout: `Msg_Id` (8) and `Result` (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgResp {
    /// `Msg_Id` (8): for SUBMIT_RESP the gateway-assigned id; for DELIVER_RESP the DELIVER's id.
    pub msg_id: u64,
    /// `Result` (1): 0 ok, 1 bad structure, 2 bad command, 3 duplicate sequence, 4 bad length,
    /// 5 bad fee code, 6 message too long, 7 bad service id, 8 flow control, 9+ other.
    pub result: u8,
}

/// SUBMIT_RESP.
pub type SubmitResp = MsgResp;
/// DELIVER_RESP.
pub type DeliverResp = MsgResp;

impl MsgResp {
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u64(self.msg_id);
        w.u8(self.result);
    }

    pub(crate) fn decode(body: &[u8], pdu: &'static str) -> Result<Self> {
        let mut r = Reader::new(body);
        let out = MsgResp {
            msg_id: r.u64("Msg_Id")?,
            result: r.u8("Result")?,
        };
        r.finish(pdu)?;
        Ok(out)
    }
}

/// CMPP 2.0 `Result` 8: the SP exceeded its flow-control limit.
pub const RESULT_FLOW_CONTROL: u8 = 8;

/// DELIVER: a mobile-originated message, or (with `registered_delivery == 1`) a status report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// `Msg_Id` (8): this DELIVER's own id.
    pub msg_id: u64,
    /// `Dest_Id` (21): the SP service number the mobile wrote to.
    pub dest_id: String,
    /// `Service_Id` (10).
    pub service_id: String,
    /// `TP_pid` (1).
    pub tp_pid: u8,
    /// `TP_udhi` (1).
    pub tp_udhi: u8,
    /// `Msg_Fmt` (1).
    pub msg_fmt: u8,
    /// `Src_terminal_Id` (21): the mobile number.
    pub src_terminal_id: String,
    /// `Registered_Delivery` (1): 1 when `msg_content` is a [`StatusReport`].
    pub registered_delivery: u8,
    /// `Msg_Content`, preceded on the wire by `Msg_Length` (1).
    pub msg_content: Vec<u8>,
    /// `Reserve` (8).
    pub reserve: [u8; 8],
}

impl Deliver {
    /// Whether this DELIVER carries a status report.
    pub fn is_report(&self) -> bool {
        self.registered_delivery == 1
    }

    /// Parses the content as a status report.
    pub fn report(&self) -> Result<StatusReport> {
        StatusReport::decode(&self.msg_content)
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<()> {
        w.u64(self.msg_id);
        w.fixed_str(&self.dest_id, 21, "Dest_Id")?;
        w.fixed_str(&self.service_id, 10, "Service_Id")?;
        w.u8(self.tp_pid);
        w.u8(self.tp_udhi);
        w.u8(self.msg_fmt);
        w.fixed_str(&self.src_terminal_id, 21, "Src_terminal_Id")?;
        w.u8(self.registered_delivery);
        write_content(w, &self.msg_content)?;
        w.bytes(&self.reserve);
        Ok(())
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self> {
        let mut r = Reader::new(body);
        let msg_id = r.u64("Msg_Id")?;
        let dest_id = r.fixed_str(21, "Dest_Id")?;
        let service_id = r.fixed_str(10, "Service_Id")?;
        let tp_pid = r.u8("TP_pid")?;
        let tp_udhi = r.u8("TP_udhi")?;
        let msg_fmt = r.u8("Msg_Fmt")?;
        let src_terminal_id = r.fixed_str(21, "Src_terminal_Id")?;
        let registered_delivery = r.u8("Registered_Delivery")?;
        let len = r.u8("Msg_Length")? as usize;
        let msg_content = r.bytes(len, "Msg_Content")?.to_vec();
        let reserve = r.array::<8>("Reserve")?;
        r.finish("DELIVER")?;
        Ok(Deliver {
            msg_id,
            dest_id,
            service_id,
            tp_pid,
            tp_udhi,
            msg_fmt,
            src_terminal_id,
            registered_delivery,
            msg_content,
            reserve,
        })
    }
}

/// The content of a status-report DELIVER (60 octets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    /// `Msg_Id` (8): the id the gateway returned in SUBMIT_RESP.
    pub msg_id: u64,
    /// `Stat` (7): `DELIVRD`, `EXPIRED`, `DELETED`, `UNDELIV`, `ACCEPTD`, `UNKNOWN`, `REJECTD`, …
    pub stat: String,
    /// `Submit_time` (10): `YYMMDDHHMM`.
    pub submit_time: String,
    /// `Done_time` (10): `YYMMDDHHMM`.
    pub done_time: String,
    /// `Dest_terminal_Id` (21): the mobile the message went to.
    pub dest_terminal_id: String,
    /// `SMSC_sequence` (4).
    pub smsc_sequence: u32,
}

/// The length of a CMPP 2.0 status report.
pub const STATUS_REPORT_LEN: usize = 60;

impl StatusReport {
    /// Whether `stat` says the message reached the handset.
    pub fn delivered(&self) -> bool {
        self.stat == "DELIVRD"
    }

    /// The 60-octet report content.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut w = Writer::new();
        w.u64(self.msg_id);
        w.fixed_str(&self.stat, 7, "Stat")?;
        w.fixed_str(&self.submit_time, 10, "Submit_time")?;
        w.fixed_str(&self.done_time, 10, "Done_time")?;
        w.fixed_str(&self.dest_terminal_id, 21, "Dest_terminal_Id")?;
        w.u32(self.smsc_sequence);
        Ok(w.into_inner())
    }

    /// Parses a report; the content must be exactly 60 octets.
    pub fn decode(content: &[u8]) -> Result<Self> {
        let mut r = Reader::new(content);
        let out = StatusReport {
            msg_id: r.u64("Msg_Id")?,
            stat: r.fixed_str(7, "Stat")?,
            submit_time: r.fixed_str(10, "Submit_time")?,
            done_time: r.fixed_str(10, "Done_time")?,
            dest_terminal_id: r.fixed_str(21, "Dest_terminal_Id")?,
            smsc_sequence: r.u32("SMSC_sequence")?,
        };
        r.finish("status report")?;
        Ok(out)
    }
}

/// Formats a gateway `Msg_Id` as this crate's string id: the unsigned 64-bit value in decimal.
pub fn format_msg_id(msg_id: u64) -> String {
    msg_id.to_string()
}

/// Parses a string id produced by [`format_msg_id`].
pub fn parse_msg_id(id: &str) -> Option<u64> {
    id.parse().ok()
}

/// Builds a `Msg_Id` the way an ISMG does: month (4 bits), day (5), hour (5), minute (6),
/// second (6), gateway code (22) and a sequence number (16).
pub fn compose_msg_id(
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    gateway: u32,
    seq: u16,
) -> u64 {
    (u64::from(month & 0xF) << 60)
        | (u64::from(day & 0x1F) << 55)
        | (u64::from(hour & 0x1F) << 50)
        | (u64::from(minute & 0x3F) << 44)
        | (u64::from(second & 0x3F) << 38)
        | (u64::from(gateway & 0x3F_FFFF) << 16)
        | u64::from(seq)
}
