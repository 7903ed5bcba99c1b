//! The 12345 hotline: tickets from every channel, dispatched to departments,
//! handled within their time limits, answered, called back and rated.
//!
//! The lifecycle ([`Ticket::apply`]) and the working-day calendar
//! ([`Calendar`]) are pure; [`Tickets`] stores tickets, their audit trail and
//! their events (through the messaging outbox) in one transaction each.

pub mod api;
mod calendar;
mod error;
mod notices;
mod number;
mod store;
mod ticket;

pub use calendar::{CN_2026, Calendar, DayKind, Limit, china};
pub use error::{Error, Result};
pub use notices::Notices;
pub use number::TicketNumber;
pub use store::{NewTicket, TicketEvent, Tickets};
pub use ticket::{
    ACTIONS, Action, Actor, Change, Channel, LimitRule, PendingExtension, Rating, ReturnDecision, Role, Rules, Status, Supervision, Ticket,
    TimeLimits, Urgency,
};
