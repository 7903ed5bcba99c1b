//! The 12345 hotline: tickets from every channel, dispatched to departments,
//! handled within their time limits, answered, called back and rated.
//!
//! The lifecycle ([`Ticket::apply`]) and the working-day calendar
//! ([`Calendar`]) are pure; [`Tickets`] stores tickets, their audit trail and
//! their events (through the messaging outbox) in one transaction each.

pub mod api;
mod calendar;
mod calls;
mod charts;
mod error;
mod notices;
pub mod pages;
mod number;
mod secret;
mod sms_intake;
mod stats;
mod store;
mod ticket;

pub use calls::{Calls, CurrentCall};
pub use calendar::{CN_2026, Calendar, DayKind, Limit, beijing, china};
pub use error::{Error, Needs, Result};
pub use notices::Notices;
pub use secret::DataKey;
pub use number::TicketNumber;
pub use stats::{DepartmentStats, Stats};
pub use sms_intake::{SMS_ACTOR, SmsIntake, survey_answer};
pub use store::{ListOrder, NewTicket, TicketEvent, Tickets};
pub use ticket::{
    ACTIONS, Action, Actor, Change, Channel, LimitRule, PendingExtension, Rating, ReturnDecision, Role, Rules, Status, Supervision, Ticket,
    TimeLimits, Urgency,
};

/// `138****5678`, `王**`.
pub(crate) fn mask(value: &str, keep_start: usize, keep_end: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= keep_start + keep_end {
        return chars.first().map(|c| format!("{c}*")).unwrap_or_default();
    }
    let hidden = chars.len() - keep_start - keep_end;
    chars[..keep_start].iter().chain(std::iter::repeat_n(&'*', hidden)).chain(chars[chars.len() - keep_end..].iter()).collect()
}

/// A phone number as logs and departments see it: `139****5678`.
pub fn mask_phone(phone: &str) -> String {
    mask(phone, 3, 4)
}
