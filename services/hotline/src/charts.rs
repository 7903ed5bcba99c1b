//! Charts for the leaders' dashboard as inline SVG, drawn on the server:
//! no script, readable without one, and each point carries a `<title>` the
//! browser shows on hover.

use std::fmt::Write;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Escapes text for SVG (XML) content and attributes.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round step for an axis up to `max`, about four ticks.
fn step(max: f64) -> f64 {
    let raw = (max / 4.0).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw)
}

struct Frame {
    out: String,
    n: usize,
}

impl Frame {
    /// The SVG element, the horizontal grid with its labels from `ticks`,
    /// and the x labels (about eight of them).
    fn new(label: &str, labels: &[String], ticks: &[(f64, String)]) -> Frame {
        let mut out = String::new();
        let _ = write!(
            out,
            r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
            esc(label)
        );
        for (y, text) in ticks {
            let _ = write!(
                out,
                r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                esc(text)
            );
        }
        let n = labels.len();
        let every = n.div_ceil(8).max(1);
        for (i, l) in labels.iter().enumerate().filter(|(i, _)| i % every == 0) {
            let _ = write!(out, r#"<text class="axis" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#, frame_x(i, n), HEIGHT - 8.0, esc(l));
        }
        Frame { out, n }
    }

    fn finish(mut self) -> String {
        self.out.push_str("</svg>");
        self.out
    }
}

/// The centre of slot `i` of `n` across the plot.
fn frame_x(i: usize, n: usize) -> f64 {
    let slot = (WIDTH - LEFT - RIGHT) / n.max(1) as f64;
    LEFT + slot * (i as f64 + 0.5)
}

/// `v` of `max` as a y coordinate.
fn y_of(v: f64, max: f64) -> f64 {
    let plot = HEIGHT - TOP - BOTTOM;
    TOP + plot * (1.0 - (v / max).clamp(0.0, 1.0))
}

/// A bar per label: counts, e.g. tickets registered each day.
pub fn bars(label: &str, labels: &[String], values: &[usize]) -> String {
    let max_value = values.iter().copied().max().unwrap_or(0) as f64;
    let s = step(max_value);
    let max = (max_value / s).ceil().max(1.0) * s;
    let mut ticks = Vec::new();
    let mut t = 0.0;
    while t <= max + 0.5 {
        ticks.push((y_of(t, max), format!("{t}")));
        t += s;
    }
    let mut f = Frame::new(label, labels, &ticks);
    let slot = (WIDTH - LEFT - RIGHT) / f.n.max(1) as f64;
    let width = (slot * 0.7).max(1.0);
    for (i, (l, v)) in labels.iter().zip(values).enumerate() {
        let y = y_of(*v as f64, max);
        let _ = write!(
            f.out,
            r#"<rect class="col" x="{:.1}" y="{y:.1}" width="{width:.1}" height="{:.1}"><title>{}：{v}</title></rect>"#,
            frame_x(i, f.n) - width / 2.0,
            HEIGHT - BOTTOM - y,
            esc(l)
        );
    }
    f.finish()
}

/// One line per series of shares (0–1), broken where a day has no value.
pub fn lines(label: &str, labels: &[String], series: &[(&str, Vec<Option<f64>>)]) -> String {
    let ticks: Vec<(f64, String)> = (0..=4).map(|q| (y_of(q as f64 * 0.25, 1.0), format!("{}%", q * 25))).collect();
    let mut f = Frame::new(label, labels, &ticks);
    for (k, (name, values)) in series.iter().enumerate() {
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (i, v) in values.iter().enumerate() {
            match v {
                Some(v) => runs.last_mut().map(|r| r.push((frame_x(i, f.n), y_of(*v, 1.0)))).unwrap_or_default(),
                None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
                None => {}
            }
        }
        for run in runs.iter().filter(|r| r.len() > 1) {
            let points: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(f.out, r#"<polyline class="line s{}" points="{}"/>"#, k + 1, points.join(" "));
        }
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    f.out,
                    r#"<circle class="dot s{}" cx="{:.1}" cy="{:.1}" r="3"><title>{} {}：{:.1}%</title></circle>"#,
                    k + 1,
                    frame_x(i, f.n),
                    y_of(*v, 1.0),
                    esc(&labels[i]),
                    esc(name),
                    v * 100.0
                );
            }
        }
    }
    f.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: usize) -> Vec<String> {
        (1..=n).map(|d| format!("11-{d:02}")).collect()
    }

    #[test]
    fn bars_scale_to_a_round_maximum_and_name_each_day() {
        let svg = bars("每日受理量", &days(3), &[3, 0, 7]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("<title>11-03：7</title>"), "{svg}");
        // 7 on an axis of 2s rounds up to 8: the tallest bar is 7/8 of the plot.
        assert!(svg.contains(">8</text>"), "{svg}");
        let plot = HEIGHT - TOP - BOTTOM;
        assert!(svg.contains(&format!(r#"height="{:.1}""#, plot * 7.0 / 8.0)), "{svg}");
        assert!(!bars("空", &days(2), &[0, 0]).contains("NaN"));
    }

    #[test]
    fn lines_break_at_days_without_a_value() {
        let svg = lines("指标", &days(5), &[("满意率", vec![Some(0.5), Some(1.0), None, Some(0.25), Some(0.75)])]);
        assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
        assert_eq!(svg.matches("<circle").count(), 4);
        assert!(svg.contains("11-02 满意率：100.0%"), "{svg}");
        assert!(svg.contains(">50%</text>"));
    }

    #[test]
    fn text_is_escaped() {
        let svg = bars("<script>", &["a&b".to_owned()], &[1]);
        assert!(!svg.contains("<script>") && svg.contains("a&amp;b"), "{svg}");
    }
}
