//! CMPP 2.0 and Alibaba Cloud SMS adapters for CivicHub, with a CMPP gateway simulator.
//!
//! - [`SmsGateway`] is what the hub uses; [`CmppClient`] and [`AliyunSms`] implement it.
//! - The CMPP codec ([`Frame`], [`Pdu`], [`FrameDecoder`]) and text handling
//!   ([`split_message`], [`Reassembler`]) are usable on their own.
//! - [`CmppSimulator`] and [`AliyunSimulator`] serve other crates' tests and local runs.

mod aliyun;
mod aliyun_sign;
mod auth;
mod client;
mod codec;
mod content;
mod error;
mod gateway;
mod link;
mod pdu;
mod reassembly;
mod secret;
mod sim_aliyun;
mod sim_cmpp;
mod wire;

pub use aliyun::{
    ALIYUN_DEFAULT_ENDPOINT, ALIYUN_SMS_VERSION, AliyunConfig, AliyunSms, aliyun_error,
};
pub use aliyun_sign::{canonicalized_query, percent_encode, rpc_signature, string_to_sign};
pub use auth::{authenticator_ismg, authenticator_source, cmpp_timestamp_now};
pub use client::{CmppClient, CmppConfig, submit_result};
pub use codec::{
    BadPdu, Decoded, Frame, FrameDecoder, HEADER_LEN, MAX_PDU_LEN, Pdu, command, decode_frame,
};
pub use content::{
    Concat, MAX_SEGMENT_OCTETS, MsgFmt, Segment, UDH_LEN, decode_text, encode_text, split_message,
    split_udh,
};
pub use error::{Error, Result};
pub use gateway::{OutgoingSms, Received, SmsEvent, SmsGateway, Submitted, Template, normalize_mobile};
pub use pdu::{
    CMPP_VERSION_2_0, Connect, ConnectResp, Deliver, DeliverResp, MAX_DEST_USR, MsgResp,
    RESULT_FLOW_CONTROL, STATUS_REPORT_LEN, StatusReport, Submit, SubmitResp, compose_msg_id,
    format_msg_id, parse_msg_id,
};
pub use reassembly::{MISSING_PART, Reassembled, Reassembler};
pub use secret::Secret;
pub use sim_aliyun::{AliyunSent, AliyunSimConfig, AliyunSimulator};
pub use sim_cmpp::{CmppSimConfig, CmppSimulator, ReceivedSms, SubmitRecord};
