//! A chart of free panels on the same time axis and markers as [`super::svg`]: each panel
//! a few named series (colour, optional dash), for runs whose data are not client classes
//! (the fleet demo's nodes).

use std::fmt::Write as _;

use super::{Frame, LEFT, PANEL, RIGHT, W, axes, esc, markers, nice, polyline};
use crate::load::Mark;

/// One line of a panel.
pub struct Series {
    pub label: String,
    pub color: &'static str,
    /// SVG `stroke-dasharray`, or none for a solid line.
    pub dash: Option<&'static str>,
    /// (seconds, value) points.
    pub points: Vec<(f64, f64)>,
}

/// One panel: a title, the unit of its axis, its series.
pub struct Panel {
    pub title: String,
    pub unit: String,
    pub series: Vec<Series>,
}

/// Render the panels, one below the other, with `marks` across all of them.
pub fn svg(title: &str, subtitle: &str, t_max: f64, marks: &[Mark], panels: &[Panel]) -> String {
    let t_max = t_max.max(1.0);
    let gap = 52.0;
    let label_band = 190.0;
    let top0 = 60.0 + label_band;
    let h = top0 + panels.len() as f64 * (PANEL + gap) + 20.0;
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
    let last_top = top0 + (panels.len().max(1) as f64 - 1.0) * (PANEL + gap) + PANEL;
    markers(&mut o, marks, top0, last_top, t_max);
    let mut top = top0;
    for p in panels {
        panel(&mut o, top, t_max, p);
        top += PANEL + gap;
    }
    let _ = writeln!(o, "</svg>");
    o
}

fn panel(o: &mut String, top: f64, t_max: f64, p: &Panel) {
    let f = Frame { top, t_max };
    let max = p
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|x| x.1))
        .fold(0.0, f64::max);
    let (max, step) = nice(max * 1.05);
    axes(o, &f, &p.title, max, step, &p.unit);
    // The legend, under the time axis's labels.
    let mut x = LEFT;
    for s in &p.series {
        let style = series_style(s);
        let y = top + PANEL + 28.0;
        let _ = writeln!(
            o,
            r#"<line x1="{x:.0}" x2="{:.0}" y1="{y:.0}" y2="{y:.0}" {style}/>"#,
            x + 20.0
        );
        let _ = writeln!(
            o,
            r##"<text x="{:.0}" y="{:.0}" font-size="10" fill="#333">{}</text>"##,
            x + 24.0,
            y + 3.5,
            esc(&s.label)
        );
        x += 34.0 + 6.0 * s.label.chars().count() as f64;
        if x > W - RIGHT - 100.0 {
            break;
        }
    }
    for s in &p.series {
        polyline(o, &f, &s.points, max, &series_style(s));
    }
}

fn series_style(s: &Series) -> String {
    match s.dash {
        Some(d) => format!(
            r#"stroke="{}" stroke-width="1.4" stroke-dasharray="{d}""#,
            s.color
        ),
        None => format!(r#"stroke="{}" stroke-width="2""#, s.color),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_panels_with_legends_and_marks() {
        let p = Panel {
            title: "client <fleet>".into(),
            unit: "datagrams/s".into(),
            series: vec![Series {
                label: "passed/s".into(),
                color: "#2b9348",
                dash: None,
                points: (1..=10).map(|i| (f64::from(i), 100.0)).collect(),
            }],
        };
        let marks = [Mark {
            t: 4.0,
            kind: "note",
            label: "banned on node1".into(),
        }];
        let svg = svg("t", "sub", 10.0, &marks, &[p]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("client &lt;fleet&gt;"));
        assert!(svg.contains("banned on node1") && svg.contains("passed/s"));
    }
}
