//! Fusion-communication (call centre) adapter for CivicHub: call events in, voice notifications out, with a simulator.
//!
//! - [`CallEvent`]: one call-centre event (`newCall`, `answer`, `hangup`) in the
//!   generic CTI push shape, parsed with [`CallEvent::parse`] and published under
//!   `civichub.fusion.call.<`[`CallEvent::subject_suffix`]`>`.
//! - [`VoiceGateway`]: text-to-speech call-outs through CivicHub's generic
//!   voice-gateway contract (documented on the type).
//! - [`simulator::VoiceSimulator`]: a local voice gateway for tests.

mod error;
mod event;
pub mod simulator;
mod voice;

pub use error::{Error, Result};
pub use event::{CallEvent, CallEventKind, Direction, MAX_EVENT_BYTES, WITHHELD};
pub use voice::{ApiKey, MAX_REFERENCE, MAX_TTS_CHARS, VoiceCall, VoiceConfig, VoiceGateway, VoiceNotice, VoiceState, VoiceStatus};
