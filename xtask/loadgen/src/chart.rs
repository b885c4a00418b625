//! The run as an SVG chart, written as plain text (no dependency): one panel per client
//! class with offered, allowed, passed and dropped datagrams per second; a panel with the
//! throttle level and the CPU reading; one panel per upstream with connection outcomes per
//! second over the breaker's state; vertical markers for phases, level changes and breaker
//! transitions across all panels. [`panels`] draws free panels on the same axes and markers.

use std::fmt::Write as _;

use crate::load::{Mark, Second};

pub mod panels;

const W: f64 = 1200.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 24.0;
const PANEL: f64 = 118.0;
const GAP: f64 = 34.0;
const LEVELS: [&str; 5] = ["none", "low", "medium", "high", "critical"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round upper bound for an axis, and its tick step.
fn nice(max: f64) -> (f64, f64) {
    if max <= 0.0 {
        return (1.0, 0.5);
    }
    let exp = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * exp >= max {
            let top = m * exp;
            return (top, top / if m == 2.5 { 5.0 } else { 4.0 });
        }
    }
    (max, max / 4.0)
}

fn fmt_num(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

struct Frame {
    top: f64,
    t_max: f64,
}

impl Frame {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.t_max).clamp(0.0, 1.0) * (W - LEFT - RIGHT)
    }

    fn y(&self, v: f64, max: f64) -> f64 {
        self.top + PANEL - (v / max).clamp(0.0, 1.0) * PANEL
    }
}

fn polyline(o: &mut String, f: &Frame, pts: &[(f64, f64)], max: f64, style: &str) {
    if pts.is_empty() {
        return;
    }
    let d: Vec<String> = pts
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", f.x(*t), f.y(*v, max)))
        .collect();
    let _ = writeln!(
        o,
        r#"<polyline fill="none" {style} points="{}"/>"#,
        d.join(" ")
    );
}

fn axes(o: &mut String, f: &Frame, title: &str, max: f64, step: f64, unit: &str) {
    let _ = writeln!(
        o,
        r##"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{PANEL}" fill="#fbfbfb" stroke="#bbb"/>"##,
        f.top,
        W - LEFT - RIGHT
    );
    let _ = writeln!(
        o,
        r##"<text x="{LEFT}" y="{:.1}" font-size="13" font-weight="bold" fill="#222">{}</text>"##,
        f.top - 6.0,
        esc(title)
    );
    let mut v = 0.0;
    while v <= max + 1e-9 {
        let y = f.y(v, max);
        let _ = writeln!(
            o,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/>"##,
            W - RIGHT
        );
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end" fill="#555">{}</text>"##,
            LEFT - 4.0,
            y + 3.5,
            fmt_num(v)
        );
        v += step;
    }
    let _ = writeln!(
        o,
        r##"<text x="12" y="{:.1}" font-size="10" fill="#555" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"##,
        f.top + PANEL / 2.0,
        f.top + PANEL / 2.0,
        esc(unit)
    );
    // Time ticks.
    let step_t = match f.t_max {
        t if t > 240.0 => 30.0,
        t if t > 100.0 => 20.0,
        t if t > 40.0 => 10.0,
        t if t > 15.0 => 5.0,
        _ => 1.0,
    };
    let mut t = 0.0;
    while t <= f.t_max + 1e-9 {
        let x = f.x(t);
        let _ = writeln!(
            o,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/>"##,
            f.top + PANEL,
            f.top + PANEL + 4.0
        );
        let _ = writeln!(
            o,
            r##"<text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#555">{t:.0}s</text>"##,
            f.top + PANEL + 14.0
        );
        t += step_t;
    }
}

fn mark_style(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "phase" => ("#264653", "6 3"),
        "level" => ("#7b2cbf", "none"),
        "breaker" => ("#c1121f", "none"),
        _ => ("#2a9d8f", "2 3"),
    }
}

/// Render the chart. `classes` and `upstreams` pick and order the panels.
pub fn svg(
    title: &str,
    subtitle: &str,
    timeline: &[Second],
    marks: &[Mark],
    classes: &[String],
    upstreams: &[String],
) -> String {
    let t_max = timeline.last().map_or(1.0, |s| s.t).max(1.0);
    let panels = classes.len() + 1 + upstreams.len();
    let label_band = 190.0;
    let top0 = 90.0 + label_band;
    let h = top0 + panels as f64 * (PANEL + GAP) + 40.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h:.0}" viewBox="0 0 {W} {h:.0}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(o, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        o,
        r##"<text x="{LEFT}" y="24" font-size="18" font-weight="bold" fill="#111">{}</text>"##,
        esc(title)
    );
    let _ = writeln!(
        o,
        r##"<text x="{LEFT}" y="42" font-size="11" fill="#444">{}</text>"##,
        esc(subtitle)
    );

    legend(&mut o);
    let last_top = top0 + (panels as f64 - 1.0) * (PANEL + GAP) + PANEL;
    markers(&mut o, marks, top0, last_top, t_max);

    let mut top = top0;
    for c in classes {
        class_panel(&mut o, top, t_max, c, timeline);
        top += PANEL + GAP;
    }
    throttle_panel(&mut o, top, t_max, timeline);
    top += PANEL + GAP;
    for u in upstreams {
        upstream_panel(&mut o, top, t_max, u, timeline);
        top += PANEL + GAP;
    }
    let _ = writeln!(o, "</svg>");
    o
}

/// The legend, top right.
fn legend(o: &mut String) {
    let legend: [(&str, &str); 8] = [
        (
            "offered/s",
            r##"stroke="#999" stroke-width="1.2" stroke-dasharray="5 3""##,
        ),
        (
            "allowed/s",
            r##"stroke="#1d4ed8" stroke-width="1.2" stroke-dasharray="2 2""##,
        ),
        ("passed/s", r##"stroke="#2b9348" stroke-width="2""##),
        ("dropped/s", r##"stroke="#d62828" stroke-width="2""##),
        (
            "phase (bold label)",
            r##"stroke="#264653" stroke-dasharray="6 3""##,
        ),
        ("throttle level change", r##"stroke="#7b2cbf""##),
        ("breaker transition", r##"stroke="#c1121f""##),
        (
            "service change / note",
            r##"stroke="#2a9d8f" stroke-dasharray="2 3""##,
        ),
    ];
    for (i, (name, style)) in legend.iter().enumerate() {
        let x = LEFT + (i % 4) as f64 * 170.0;
        let y = 62.0 + (i / 4) as f64 * 16.0;
        let _ = writeln!(
            o,
            r#"<line x1="{x:.0}" x2="{:.0}" y1="{y:.0}" y2="{y:.0}" {style}/>"#,
            x + 22.0
        );
        let _ = writeln!(
            o,
            r##"<text x="{:.0}" y="{:.0}" font-size="10" fill="#333">{}</text>"##,
            x + 26.0,
            y + 3.5,
            esc(name)
        );
    }
}

/// Marker lines across every panel; marks closer than a label's width share one label.
fn markers(o: &mut String, marks: &[Mark], top0: f64, last_top: f64, t_max: f64) {
    let f0 = Frame { top: top0, t_max };
    let mut shown: Vec<&Mark> = marks
        .iter()
        .filter(|m| m.t >= 0.0 && m.t <= t_max)
        .collect();
    shown.sort_by(|a, b| a.t.partial_cmp(&b.t).unwrap_or(std::cmp::Ordering::Equal));
    let mut clusters: Vec<Vec<&Mark>> = Vec::new();
    for m in shown {
        match clusters.last_mut() {
            Some(c) if f0.x(m.t) - f0.x(c[0].t) < 13.0 => c.push(m),
            _ => clusters.push(vec![m]),
        }
    }
    for c in &clusters {
        for m in c {
            let x = f0.x(m.t);
            let (color, dash) = mark_style(m.kind);
            let _ = writeln!(
                o,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{last_top:.1}" stroke="{color}" stroke-width="1" stroke-dasharray="{dash}" opacity="0.75"/>"#,
                top0 - 12.0
            );
        }
        let x = f0.x(c[0].t);
        let ly = top0 - 16.0;
        let mut label = String::new();
        for (i, m) in c.iter().enumerate() {
            let (color, _) = mark_style(m.kind);
            let weight = if m.kind == "phase" { "bold" } else { "normal" };
            let sep = if i == 0 { "" } else { " · " };
            let _ = write!(
                label,
                r#"<tspan fill="{color}" font-weight="{weight}">{sep}{}</tspan>"#,
                esc(&m.label)
            );
        }
        let _ = writeln!(
            o,
            r##"<text x="{x:.1}" y="{ly:.1}" font-size="10" transform="rotate(-55 {x:.1} {ly:.1})">{label}<tspan fill="#666"> ({:.0}s)</tspan></text>"##,
            c[0].t
        );
    }
}

/// A client class's panel: offered, allowed, passed and dropped per second.
fn class_panel(o: &mut String, top: f64, t_max: f64, c: &str, timeline: &[Second]) {
    let f = Frame { top, t_max };
    let get = |s: &Second, k: fn(&crate::load::ClassSecond) -> u64| {
        s.classes
            .get(c)
            .map_or(0.0, |x| k(x) as f64 / s.dt.max(1e-3))
    };
    let offered: Vec<(f64, f64)> = timeline
        .iter()
        .map(|s| (s.t, get(s, |x| x.offered)))
        .collect();
    let max = offered.iter().map(|p| p.1).fold(0.0, f64::max);
    let (max, step) = nice(max * 1.05);
    let total_o: u64 = timeline
        .iter()
        .filter_map(|s| s.classes.get(c))
        .map(|x| x.offered)
        .sum();
    let total_p: u64 = timeline
        .iter()
        .filter_map(|s| s.classes.get(c))
        .map(|x| x.passed)
        .sum();
    axes(
        o,
        &f,
        &format!("{c}: {total_p} of {total_o} datagrams passed"),
        max,
        step,
        "datagrams/s",
    );
    type Field = fn(&crate::load::ClassSecond) -> u64;
    let series: [(Field, &str); 4] = [
        (
            |x| x.offered,
            r##"stroke="#999" stroke-width="1.2" stroke-dasharray="5 3""##,
        ),
        (
            |x| x.allowed,
            r##"stroke="#1d4ed8" stroke-width="1.2" stroke-dasharray="2 2""##,
        ),
        (|x| x.passed, r##"stroke="#2b9348" stroke-width="2""##),
        (|x| x.dropped, r##"stroke="#d62828" stroke-width="2""##),
    ];
    for (field, style) in series {
        let points: Vec<(f64, f64)> = timeline.iter().map(|s| (s.t, get(s, field))).collect();
        polyline(o, &f, &points, max, style);
    }
}

/// The throttle panel: level as steps, CPU reading as a thin line (both on 0–4 / 0–1).
fn throttle_panel(o: &mut String, top: f64, t_max: f64, timeline: &[Second]) {
    let f = Frame { top, t_max };
    axes(
        o,
        &f,
        "throttle level (steps) and CPU reading (thin, 0–1 on the same scale)",
        4.0,
        1.0,
        "level",
    );
    for (i, l) in LEVELS.iter().enumerate() {
        let y = f.y(i as f64, 4.0);
        // The top label sits below its line, clear of the panel's title.
        let y = if i == 4 { y + 10.0 } else { y - 2.0 };
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{y:.1}" font-size="9" fill="#7b2cbf">{l}</text>"##,
            LEFT + 3.0
        );
    }
    let mut pts = Vec::new();
    let mut prev: Option<f64> = None;
    for s in timeline {
        let v = LEVELS.iter().position(|l| *l == s.level).unwrap_or(0) as f64;
        if let Some(p) = prev {
            pts.push((s.t - s.dt, p));
        }
        pts.push((s.t - s.dt, v));
        pts.push((s.t, v));
        prev = Some(v);
    }
    polyline(o, &f, &pts, 4.0, r##"stroke="#7b2cbf" stroke-width="2.2""##);
    let cpu: Vec<(f64, f64)> = timeline
        .iter()
        .filter_map(|s| s.cpu.map(|c| (s.t, c * 4.0)))
        .collect();
    polyline(o, &f, &cpu, 4.0, r##"stroke="#f77f00" stroke-width="1""##);
}

/// An upstream's panel: outcomes per second over the breaker state.
fn upstream_panel(o: &mut String, top: f64, t_max: f64, u: &str, timeline: &[Second]) {
    let f = Frame { top, t_max };
    let per = |s: &Second, k: fn(&crate::load::UpstreamSecond) -> u64| {
        s.upstreams
            .get(u)
            .map_or(0.0, |x| k(x) as f64 / s.dt.max(1e-3))
    };
    let max = timeline
        .iter()
        .map(|s| per(s, |x| x.ok + x.reset + x.timeout + x.error))
        .fold(0.0, f64::max);
    let (max, step) = nice(max * 1.05);
    axes(
        o,
        &f,
        &format!(
            "upstream {u}: connections/s — ok (green), reset (orange), timeout (red), error (brown); shading = breaker open / half-open"
        ),
        max,
        step,
        "conns/s",
    );
    for s in timeline {
        let state = s.upstreams.get(u).map_or("", |x| x.state.as_str());
        let fill = match state {
            "open" => "#fde2e2",
            "half_open" => "#fff3c4",
            _ => continue,
        };
        let (x0, x1) = (f.x(s.t - s.dt), f.x(s.t));
        let _ = writeln!(
            o,
            r#"<rect x="{x0:.1}" y="{top:.1}" width="{:.1}" height="{PANEL}" fill="{fill}" opacity="0.9"/>"#,
            (x1 - x0).max(0.5)
        );
    }
    for (k, color) in [
        (0usize, "#2b9348"),
        (1, "#f77f00"),
        (2, "#d62828"),
        (3, "#8d5524"),
    ] {
        let pts: Vec<(f64, f64)> = timeline
            .iter()
            .map(|s| {
                let v = per(
                    s,
                    match k {
                        0 => |x| x.ok,
                        1 => |x| x.reset,
                        2 => |x| x.timeout,
                        _ => |x| x.error,
                    },
                );
                (s.t, v)
            })
            .collect();
        if pts.iter().any(|p| p.1 > 0.0) {
            polyline(
                o,
                &f,
                &pts,
                max,
                &format!(r#"stroke="{color}" stroke-width="1.8""#),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a panic is how a test fails")]
mod tests {
    use super::*;
    use crate::load::ClassSecond;

    #[test]
    fn renders_well_formed_svg() {
        let timeline: Vec<Second> = (1..=20)
            .map(|i| {
                let mut s = Second {
                    t: f64::from(i),
                    dt: 1.0,
                    level: if i > 10 { "high".into() } else { "none".into() },
                    cpu: Some(0.5),
                    ..Default::default()
                };
                s.classes.insert(
                    "premium".into(),
                    ClassSecond {
                        offered: 1000,
                        passed: 800,
                        dropped: 200,
                        allowed: 810,
                    },
                );
                s
            })
            .collect();
        let marks = vec![Mark {
            t: 10.5,
            kind: "level",
            label: "level high & <x>".into(),
        }];
        let svg = svg("t", "sub", &timeline, &marks, &["premium".into()], &[]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("level high &amp; &lt;x&gt;"));
        assert_eq!(svg.matches("<svg").count(), 1);
    }
}
