//! Citizens' SMS to the hotline (`civichub.msg.sms.in`): an answer to the
//! satisfaction survey records the rating of the caller's ticket waiting
//! for it; anything else becomes a new ticket, whose number the citizen
//! gets back by SMS (the `created` notice).

use std::sync::Arc;

use async_trait::async_trait;
use civichub_messaging::{Bus, Consumer, Envelope, Handler, Outcome, subjects};
use civichub_store::Row;
use serde::Deserialize;

use crate::ticket::{Action, Actor, Channel, Rating, Role};
use crate::{Error, NewTicket, Tickets};

/// The actor recorded for what citizens do by SMS.
pub const SMS_ACTOR: &str = "citizen-sms";

/// A citizen's SMS as the SMS gateway publishes it.
#[derive(Debug, Deserialize)]
struct Incoming {
    from: String,
    text: String,
}

/// Turns citizens' SMS into tickets and ratings.
#[derive(Debug)]
pub struct SmsIntake {
    tickets: Arc<Tickets>,
}

/// The rating an SMS answer to the survey gives: `1` / `满意`, `2` /
/// `基本满意`, `3` / `不满意`.
pub fn survey_answer(text: &str) -> Option<Rating> {
    let t: String = text.trim().trim_end_matches(['。', '.', '!', '！']).chars().filter(|c| !c.is_whitespace()).collect();
    match t.as_str() {
        "1" | "１" | "满意" => Some(Rating::Satisfied),
        "2" | "２" | "基本满意" => Some(Rating::BasicallySatisfied),
        "3" | "３" | "不满意" => Some(Rating::Unsatisfied),
        _ => None,
    }
}

impl SmsIntake {
    /// Registers the intake consumer on `bus` (before the bus starts).
    pub fn register(bus: &Bus, tickets: Arc<Tickets>) {
        bus.register(Consumer::new("hotline-sms-intake", subjects::SMS_IN, Arc::new(SmsIntake { tickets })));
    }

    async fn handle_sms(&self, env: &Envelope, sms: Incoming) -> crate::Result<()> {
        let phone = civichub_messaging::messages::Phone::parse(&sms.from).map(|p| p.as_str().to_owned()).unwrap_or(sms.from.clone());
        if let Some(rating) = survey_answer(&sms.text) {
            let Some(number) = self.awaiting_rating(&phone).await? else {
                // A bare "1" or "满意" with nothing to rate is not a request.
                tracing::info!("survey answer from {} with no ticket awaiting a rating", crate::mask_phone(&phone));
                return Ok(());
            };
            let actor = Actor { name: SMS_ACTOR.into(), roles: vec![Role::Agent], department: None };
            let action = Action::Callback { rating, note: Some(format!("短信评价：{}", sms.text.trim())) };
            return match self.tickets.act(&number, &action, &actor, Tickets::now()).await {
                // Rated in the meantime (a redelivery, or an agent's callback): nothing more to do.
                Ok(_) | Err(Error::Conflict(_) | Error::Refused { .. }) => Ok(()),
                Err(e) => Err(e),
            };
        }
        let new = NewTicket {
            channel: Channel::Sms,
            caller_name: None,
            caller_phone: Some(phone),
            content: sms.text,
            location: None,
            category: None,
            urgency: None,
        };
        self.tickets.register_from(new, SMS_ACTOR, Tickets::now(), Some(&env.id)).await.map(|_| ())
    }

    /// The caller's latest ticket answered and not yet rated.
    async fn awaiting_rating(&self, phone: &str) -> crate::Result<Option<String>> {
        Ok(sqlx::query("SELECT number FROM hotline_tickets WHERE caller_phone = $1 AND status = 'replied' ORDER BY updated_ms DESC LIMIT 1")
            .bind(self.tickets.phone_index(phone))
            .fetch_optional(self.tickets.db().pool())
            .await?
            .map(|r| r.try_get("number"))
            .transpose()?)
    }
}

#[async_trait]
impl Handler for SmsIntake {
    async fn handle(&self, env: &Envelope, _delivery: u32) -> Outcome {
        let sms: Incoming = match env.payload() {
            Ok(s) => s,
            Err(e) => return Outcome::reject(format!("not an incoming SMS: {e}")),
        };
        if sms.text.trim().is_empty() {
            return Outcome::Ack;
        }
        match self.handle_sms(env, sms).await {
            Ok(()) => Outcome::Ack,
            Err(Error::Invalid(why)) => Outcome::reject(why),
            Err(e) => Outcome::retry(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survey_answers_are_read() {
        assert_eq!(survey_answer(" 1 "), Some(Rating::Satisfied));
        assert_eq!(survey_answer("不满意。"), Some(Rating::Unsatisfied));
        assert_eq!(survey_answer("基本满意"), Some(Rating::BasicallySatisfied));
        assert_eq!(survey_answer("３"), Some(Rating::Unsatisfied));
        assert_eq!(survey_answer("路灯又坏了"), None);
        assert_eq!(survey_answer("12"), None);
    }
}
