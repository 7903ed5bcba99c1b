//! The KPIs cities publish (see the domain notes), over the tickets
//! registered in a period: volumes by channel, category, department and
//! area, hot topics, on-time sign and reply rates, direct-answer, one-time
//! resolution, callback and satisfaction rates, the average handling time in
//! working days, and the main ones day by day.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::calendar::{Calendar, beijing};
use crate::ticket::{Rating, Status, Ticket};

/// Words too common in requests to be a topic.
const STOPWORDS: &[&str] = &[
    "市民", "来电", "反映", "反应", "咨询", "投诉", "举报", "建议", "求助", "希望", "要求", "请求", "问题", "情况", "处理", "解决",
    "相关", "部门", "有关", "我们", "你们", "他们", "我家", "自己", "这个", "那个", "一个", "什么", "怎么", "如何", "为什么", "是否",
    "已经", "现在", "目前", "一直", "还是", "没有", "可以", "因为", "所以", "但是", "而且", "以及", "并且", "导致", "进行", "今天",
    "昨天", "每天", "经常", "多次", "严重", "影响", "小区", "附近", "门口", "一下", "不能", "无法", "需要", "能否", "一周", "一个月",
    "几天", "多天", "半年", "一年", "晚上", "白天", "时间", "至今", "仍然", "还有", "这里", "那里",
];
/// Hot topics listed at most.
const TOPICS: usize = 10;

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

/// The main KPIs of one day of a period (tickets registered that day).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DayStats {
    /// The day in Beijing time, `YYYY-MM-DD`.
    pub date: String,
    /// Tickets registered.
    pub registered: usize,
    /// Answered at once from the knowledge base, of those not merged.
    pub direct_answer_rate: Option<f64>,
    /// Replied within the limit, of those replied.
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
    /// Count per area (the district or county the location names, else "未注明"), most first (at most 20).
    pub by_area: Vec<(String, usize)>,
    /// Hot topics: the words found in most requests, with how many (at most 10).
    pub top_topics: Vec<(String, usize)>,
    /// Answered at once from the knowledge base, of the tickets not merged.
    pub direct_answer_rate: Option<f64>,
    /// Signed within the limit, of those signed.
    pub on_time_sign_rate: Option<f64>,
    /// Replied within the limit, of those replied.
    pub on_time_reply_rate: Option<f64>,
    /// Replied and never reopened (一次性办结), of those replied.
    pub one_time_resolution_rate: Option<f64>,
    /// Called back (rated or unreachable), of those replied.
    pub callback_rate: Option<f64>,
    /// Satisfied or basically satisfied, of those rated (unreachable excluded).
    pub satisfaction_rate: Option<f64>,
    /// Mean working days from dispatch to reply.
    pub average_handling_working_days: Option<f64>,
    /// Still open and past the reply deadline (at `now`).
    pub overdue_open: usize,
    /// Day by day, every day of the period.
    pub daily: Vec<DayStats>,
}

#[derive(Default)]
struct Tally {
    tickets: usize,
    /// Not merged, and of those answered directly.
    counted: usize,
    direct: usize,
    once: usize,
    signed: usize,
    signed_on_time: usize,
    replied: usize,
    replied_on_time: usize,
    rated: usize,
    satisfied: usize,
}

impl Tally {
    /// Counts a ticket that was not merged.
    fn add(&mut self, t: &Ticket) {
        self.counted += 1;
        if t.direct_answer {
            self.direct += 1;
            return;
        }
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
            if t.reopened == 0 {
                self.once += 1;
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

/// The area a location names: the district or county (区/县, or a
/// county-level 市 after a prefecture), else "未注明".
pub fn area(location: Option<&str>) -> String {
    let unknown = || "未注明".to_owned();
    let Some(text) = location.map(str::trim).filter(|l| !l.is_empty()) else { return unknown() };
    let chars: Vec<char> = text.chars().take(24).collect();
    let mut start = 0;
    for (i, c) in chars.iter().enumerate() {
        match c {
            '省' => start = i + 1,
            '区' | '县' if i > start => return chars[start..=i].iter().collect(),
            '市' if i > start => {
                // A prefecture-level city is followed by its district or county.
                let rest: String = chars[i + 1..].iter().take(8).collect();
                if rest.contains(['区', '县', '市']) {
                    start = i + 1;
                } else {
                    return chars[start..=i].iter().collect();
                }
            }
            _ => {}
        }
    }
    unknown()
}

/// Tickets per key, most first, then by key; at most `n`.
fn top(counts: BTreeMap<String, usize>, n: usize) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// The KPIs of `tickets`, registered in `[from_ms, to_ms)`, at `now` (Unix ms).
pub fn compute(tickets: &[Ticket], calendar: &Calendar, (from_ms, to_ms): (i64, i64), now: i64) -> Stats {
    let mut s = Stats { total: tickets.len(), ..Default::default() };
    let mut all = Tally::default();
    let mut departments: BTreeMap<String, Tally> = BTreeMap::new();
    let mut days: BTreeMap<String, (usize, Tally)> = BTreeMap::new();
    let (mut categories, mut areas, mut topics) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::<String, usize>::new());
    let mut words = civichub_kb::analysis::ZhTokenizer::dictionary_words();
    let mut called_back = 0;
    let mut handling = Vec::new();
    for t in tickets {
        *s.by_channel.entry(t.channel.as_str().to_owned()).or_default() += 1;
        if let Some(c) = &t.category {
            *categories.entry(c.clone()).or_default() += 1;
        }
        *areas.entry(area(t.location.as_deref())).or_default() += 1;
        let day = days.entry(beijing(Some(t.created_ms), "%Y-%m-%d").unwrap_or_default()).or_default();
        day.0 += 1;
        if t.status == Status::Merged {
            s.merged += 1;
            continue;
        }
        let mut seen: Vec<String> = words
            .words(&t.content)
            .into_iter()
            .filter(|w| w.chars().count() >= 2 && w.chars().all(|c| c.is_alphanumeric()) && !STOPWORDS.contains(&w.as_str()))
            .collect();
        seen.sort();
        seen.dedup();
        for w in seen {
            *topics.entry(w).or_default() += 1;
        }
        all.add(t);
        day.1.add(t);
        if t.direct_answer {
            continue;
        }
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
    s.direct_answer_rate = rate(all.direct, all.counted);
    s.on_time_sign_rate = rate(all.signed_on_time, all.signed);
    s.on_time_reply_rate = rate(all.replied_on_time, all.replied);
    s.one_time_resolution_rate = rate(all.once, all.replied);
    s.callback_rate = rate(called_back, all.replied);
    s.satisfaction_rate = rate(all.satisfied, all.rated);
    s.average_handling_working_days =
        (!handling.is_empty()).then(|| (handling.iter().sum::<f64>() / handling.len() as f64 * 100.0).round() / 100.0);
    s.by_category = top(categories, 20);
    s.by_area = top(areas, 20);
    s.top_topics = top(topics, TOPICS);
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
    // Every day of the period, the quiet ones too.
    let mut day_start = from_ms;
    while day_start < to_ms {
        let date = beijing(Some(day_start), "%Y-%m-%d").unwrap_or_default();
        let (registered, t) = days.remove(&date).unwrap_or_default();
        s.daily.push(DayStats {
            date,
            registered,
            direct_answer_rate: rate(t.direct, t.counted),
            on_time_reply_rate: rate(t.replied_on_time, t.replied),
            satisfaction_rate: rate(t.satisfied, t.rated),
        });
        day_start += 86_400_000;
    }
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
        let new = |n: u32, ch| Ticket {
            category: Some("070101".into()),
            location: Some(if n.is_multiple_of(2) { "浙江省台州市椒江区白云街道" } else { "黄岩区江口街道" }.into()),
            ..Ticket::registered(format!("12345-20261127-{n:06}"), ch, format!("市民来电反映小区路灯坏了，夜间噪音扰民{n}"), FRI)
        };
        let mut direct = new(1, Channel::Phone);
        run(&mut direct, &[("answer-directly", r#"{"answer":"a"}"#, FRI)]);
        let mut on_time = new(2, Channel::Phone);
        run(&mut on_time, &[
            ("dispatch", r#"{"department":"城管局"}"#, FRI),
            ("accept", "", FRI + 3_600_000),
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

        let mut reopened = new(6, Channel::Phone);
        run(&mut reopened, &[
            ("dispatch", r#"{"department":"城管局"}"#, FRI),
            ("accept", "", FRI + 3_600_000),
            ("reply", r#"{"text":"ok"}"#, FRI + 2 * 3_600_000),
            ("callback", r#"{"rating":"unsatisfied"}"#, FRI + 3 * 3_600_000),
            ("reopen", r#"{"reason":"没修好"}"#, FRI + 4 * 3_600_000),
            ("accept", "", FRI + 5 * 3_600_000),
            ("reply", r#"{"text":"修好了"}"#, FRI + 6 * 3_600_000),
        ]);
        reopened.created_ms = FRI + DAY; // registered on the Saturday

        let midnight = FRI - 10 * 3_600_000;
        let s = compute(&[direct, on_time, late, open, merged, reopened], &Calendar::default(), (midnight, midnight + 3 * DAY), FRI + 30 * DAY);
        assert_eq!((s.total, s.merged), (6, 1));
        assert_eq!(s.by_channel.get("phone"), Some(&3));
        assert_eq!(s.by_category, vec![("070101".to_owned(), 6)]);
        assert_eq!(s.direct_answer_rate, Some(0.2));
        // The reopened ticket counts with its second handling, but not as resolved at once.
        assert_eq!(s.on_time_sign_rate, Some(0.6667));
        assert_eq!(s.on_time_reply_rate, Some(0.6667));
        assert_eq!(s.one_time_resolution_rate, Some(0.6667));
        assert_eq!(s.callback_rate, Some(0.6667));
        assert_eq!(s.satisfaction_rate, Some(0.5));
        assert_eq!(s.overdue_open, 1);
        // Friday 10:00 → Monday 10:00 is one working day; → Sunday a week later 5.58;
        // reopened 14:00 → replied 16:00, 0.08.
        assert_eq!(s.average_handling_working_days, Some(2.22));
        assert_eq!(s.by_department[0].department, "城管局");
        assert_eq!(s.by_department[0].tickets, 3);
        assert_eq!(s.by_area, vec![("椒江区".to_owned(), 3), ("黄岩区".to_owned(), 3)]);
        // Merged repeats are not topics; boilerplate words are not either.
        let topics: Vec<&str> = s.top_topics.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(s.top_topics[0].1, 5, "{topics:?}");
        assert!(topics.contains(&"路灯") && topics.contains(&"噪音"), "{topics:?}");
        assert!(!topics.contains(&"市民") && !topics.contains(&"反映"), "{topics:?}");
        let days: Vec<(&str, usize)> = s.daily.iter().map(|d| (d.date.as_str(), d.registered)).collect();
        assert_eq!(days, vec![("2026-11-27", 5), ("2026-11-28", 1), ("2026-11-29", 0)]);
        assert_eq!(s.daily[0].direct_answer_rate, Some(0.25));
        assert_eq!(s.daily[2].satisfaction_rate, None);
    }

    #[test]
    fn areas_are_districts_and_counties() {
        for (location, expected) in [
            (Some("浙江省台州市椒江区白云街道"), "椒江区"),
            (Some("台州市黄岩区"), "黄岩区"),
            (Some("天台县平桥镇"), "天台县"),
            (Some("温岭市城东街道"), "温岭市"),
            (Some("台州市温岭市城东街道"), "温岭市"),
            (Some("解放路 12 号"), "未注明"),
            (Some("  "), "未注明"),
            (None, "未注明"),
        ] {
            assert_eq!(area(location), expected, "{location:?}");
        }
    }
}
