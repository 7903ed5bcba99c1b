//! The KPIs cities publish (see the domain notes), over the tickets
//! registered in a period: volumes by channel, category and department,
//! on-time sign and reply rates, direct-answer, callback and satisfaction
//! rates, and the average handling time in working days.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::calendar::Calendar;
use crate::ticket::{Rating, Status, Ticket};

/// A share: `part / whole`, or none when there is nothing to divide.
fn rate(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0)
}

/// One department's numbers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DepartmentStats {
    /// The department.
    pub department: String,
    /// Tickets dispatched to it (as lead).
    pub tickets: usize,
    /// Signed within the sign limit, of those signed.
    pub on_time_sign_rate: Option<f64>,
    /// Replied within the reply limit, of those replied.
    pub on_time_reply_rate: Option<f64>,
    /// Satisfied or basically satisfied, of those rated.
    pub satisfaction_rate: Option<f64>,
}

/// The KPIs of a period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Tickets registered (merged repeats included).
    pub total: usize,
    /// Merged into another ticket.
    pub merged: usize,
    /// Count per channel.
    pub by_channel: BTreeMap<String, usize>,
    /// Count per category code, most first (at most 20).
    pub by_category: Vec<(String, usize)>,
    /// Per department, most tickets first.
    pub by_department: Vec<DepartmentStats>,
    /// Answered at once from the knowledge base, of the tickets not merged.
    pub direct_answer_rate: Option<f64>,
    /// Signed within the limit, of those signed.
    pub on_time_sign_rate: Option<f64>,
    /// Replied within the limit, of those replied.
    pub on_time_reply_rate: Option<f64>,
    /// Called back (rated or unreachable), of those replied.
    pub callback_rate: Option<f64>,
    /// Satisfied or basically satisfied, of those rated (unreachable excluded).
    pub satisfaction_rate: Option<f64>,
    /// Mean working days from dispatch to reply.
    pub average_handling_working_days: Option<f64>,
    /// Still open and past the reply deadline (at `now`).
    pub overdue_open: usize,
}

#[derive(Default)]
struct Tally {
    tickets: usize,
    signed: usize,
    signed_on_time: usize,
    replied: usize,
    replied_on_time: usize,
    rated: usize,
    satisfied: usize,
}

impl Tally {
    fn add(&mut self, t: &Ticket) {
        self.tickets += 1;
        if let Some(at) = t.accepted_ms.or(if t.replied_ms.is_some() && !t.direct_answer { t.replied_ms } else { None }) {
            self.signed += 1;
            if t.sign_due_ms.is_none_or(|d| at <= d) {
                self.signed_on_time += 1;
            }
        }
        if let (Some(at), false) = (t.replied_ms, t.direct_answer) {
            self.replied += 1;
            if t.due_ms.is_none_or(|d| at <= d) {
                self.replied_on_time += 1;
            }
        }
        match t.rating {
            Some(Rating::Satisfied | Rating::BasicallySatisfied) => {
                self.rated += 1;
                self.satisfied += 1;
            }
            Some(Rating::Unsatisfied) => self.rated += 1,
            Some(Rating::Unreachable) | None => {}
        }
    }
}

/// The KPIs of `tickets` at `now` (Unix ms).
pub fn compute(tickets: &[Ticket], calendar: &Calendar, now: i64) -> Stats {
    let mut s = Stats { total: tickets.len(), ..Default::default() };
    let mut all = Tally::default();
    let mut departments: BTreeMap<String, Tally> = BTreeMap::new();
    let mut categories: BTreeMap<String, usize> = BTreeMap::new();
    let (mut direct, mut counted, mut called_back) = (0, 0, 0);
    let mut handling = Vec::new();
    for t in tickets {
        *s.by_channel.entry(t.channel.as_str().to_owned()).or_default() += 1;
        if let Some(c) = &t.category {
            *categories.entry(c.clone()).or_default() += 1;
        }
        if t.status == Status::Merged {
            s.merged += 1;
            continue;
        }
        counted += 1;
        if t.direct_answer {
            direct += 1;
            continue;
        }
        all.add(t);
        if let Some(d) = &t.department {
            departments.entry(d.clone()).or_default().add(t);
        }
        if t.replied_ms.is_some() && t.rating.is_some() {
            called_back += 1;
        }
        if let (Some(from), Some(to)) = (t.dispatched_ms, t.replied_ms) {
            handling.push(calendar.working_days_between(from, to));
        }
        if matches!(t.status, Status::Dispatched | Status::Accepted | Status::Returned) && t.due_ms.is_some_and(|d| d < now) {
            s.overdue_open += 1;
        }
    }
    s.direct_answer_rate = rate(direct, counted);
    s.on_time_sign_rate = rate(all.signed_on_time, all.signed);
    s.on_time_reply_rate = rate(all.replied_on_time, all.replied);
    s.callback_rate = rate(called_back, all.replied);
    s.satisfaction_rate = rate(all.satisfied, all.rated);
    s.average_handling_working_days =
        (!handling.is_empty()).then(|| (handling.iter().sum::<f64>() / handling.len() as f64 * 100.0).round() / 100.0);
    let mut by_category: Vec<(String, usize)> = categories.into_iter().collect();
    by_category.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    by_category.truncate(20);
    s.by_category = by_category;
    let mut by_department: Vec<DepartmentStats> = departments
        .into_iter()
        .map(|(department, t)| DepartmentStats {
            department,
            tickets: t.tickets,
            on_time_sign_rate: rate(t.signed_on_time, t.signed),
            on_time_reply_rate: rate(t.replied_on_time, t.replied),
            satisfaction_rate: rate(t.satisfied, t.rated),
        })
        .collect();
    by_department.sort_by(|a, b| b.tickets.cmp(&a.tickets).then_with(|| a.department.cmp(&b.department)));
    s.by_department = by_department;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{Action, Channel, Rules, TimeLimits};

    const FRI: i64 = 1_795_744_800_000; // Friday 27 November 2026, 10:00 Beijing
    const DAY: i64 = 86_400_000;

    fn run(t: &mut Ticket, steps: &[(&str, &str, i64)]) {
        let cal = Calendar::default();
        let limits = TimeLimits::default();
        for (name, body, at) in steps {
            t.apply(&Action::parse(name, body.as_bytes()).unwrap(), *at, Rules { calendar: &cal, limits: &limits }).unwrap();
        }
    }

    #[test]
    fn kpis_count_what_the_domain_notes_define() {
        let new = |n: u32, ch| Ticket { category: Some("070101".into()), ..Ticket::registered(format!("12345-20261127-{n:06}"), ch, "x".into(), FRI) };
        let mut direct = new(1, Channel::Phone);
        run(&mut direct, &[("answer-directly", r#"{"answer":"a"}"#, FRI)]);
        let mut on_time = new(2, Channel::Phone);
        run(&mut on_time, &[
            ("dispatch", r#"{"department":"城管局"}"#, FRI),
            ("accept", "", FRI + 3600_000),
            ("reply", r#"{"text":"ok"}"#, FRI + 3 * DAY), // Monday: one working day
            ("callback", r#"{"rating":"satisfied"}"#, FRI + 4 * DAY),
        ]);
        let mut late = new(3, Channel::Web);
        run(&mut late, &[
            ("dispatch", r#"{"department":"城管局"}"#, FRI),
            ("accept", "", FRI + 4 * DAY), // after Monday 10:00
            ("reply", r#"{"text":"ok"}"#, FRI + 9 * DAY), // after the next Friday
            ("callback", r#"{"rating":"unsatisfied"}"#, FRI + 10 * DAY),
        ]);
        let mut open = new(4, Channel::Sms);
        run(&mut open, &[("dispatch", r#"{"department":"住建局"}"#, FRI)]);
        let mut merged = new(5, Channel::App);
        run(&mut merged, &[("merge", r#"{"into":"12345-20261127-000004"}"#, FRI)]);

        let s = compute(&[direct, on_time, late, open, merged], &Calendar::default(), FRI + 30 * DAY);
        assert_eq!((s.total, s.merged), (5, 1));
        assert_eq!(s.by_channel.get("phone"), Some(&2));
        assert_eq!(s.by_category, vec![("070101".to_owned(), 5)]);
        assert_eq!(s.direct_answer_rate, Some(0.25));
        assert_eq!(s.on_time_sign_rate, Some(0.5));
        assert_eq!(s.on_time_reply_rate, Some(0.5));
        assert_eq!(s.callback_rate, Some(1.0));
        assert_eq!(s.satisfaction_rate, Some(0.5));
        assert_eq!(s.overdue_open, 1);
        // Friday 10:00 → Monday 10:00 is one working day; → Sunday a week later 5.58.
        assert_eq!(s.average_handling_working_days, Some(3.29));
        assert_eq!(s.by_department[0].department, "城管局");
        assert_eq!(s.by_department[0].tickets, 2);
    }
}
