//! A dependency-free SVG line plot for training curves.

use std::fmt::Write;

/// Writes an SVG with one panel per series (`(title, points)`), each scaled to its own range.
pub fn svg(series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let (w, h, pad) = (640.0, 220.0, 40.0);
    let height = h * series.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    for (k, (title, points)) in series.iter().enumerate() {
        let top = k as f64 * h;
        let _ = writeln!(out, r#"<text x="{pad}" y="{}">{title}</text>"#, top + 16.0);
        let _ = writeln!(
            out,
            r##"<rect x="{pad}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
            top + 24.0,
            w - 2.0 * pad,
            h - 2.0 * pad
        );
        if points.is_empty() {
            continue;
        }
        let (xmin, xmax) =
            points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let (ymin, ymax) =
            points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        let sx = |x: f64| pad + (x - xmin) / (xmax - xmin).max(1e-12) * (w - 2.0 * pad);
        let sy =
            |y: f64| top + 24.0 + (1.0 - (y - ymin) / (ymax - ymin).max(1e-12)) * (h - 2.0 * pad);
        let path: Vec<String> =
            points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##,
            path.join(" ")
        );
        let _ = writeln!(out, r#"<text x="4" y="{:.1}">{ymax:.3}</text>"#, top + 30.0);
        let _ = writeln!(out, r#"<text x="4" y="{:.1}">{ymin:.3}</text>"#, top + h - pad + 24.0);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}">{xmax}</text>"#,
            w - pad - 20.0,
            top + h - pad + 38.0
        );
    }
    out.push_str("</svg>\n");
    out
}
