//! Charts drawn on the server as SVG, so they need no script and no
//! stylesheet of their own. Only numbers and fixed words go into them (never
//! a name from the registry): the markup is inserted unescaped.

use std::fmt::Write;

use chrono::{DateTime, Duration, Timelike, Utc};
use model::TenantStatus;
use registry::tenants::ActivationLatency;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 36.0;

/// The colour of each status, in charts and badges (the stylesheet's
/// `.status-*` classes use the same).
pub fn status_colour(status: TenantStatus) -> &'static str {
    match status {
        TenantStatus::Pending => "#8a6d00",
        TenantStatus::Provisioning => "#1f5fbf",
        TenantStatus::Active => "#1d7a3a",
        TenantStatus::Suspending => "#7a4fb0",
        TenantStatus::Suspended => "#5b4a86",
        TenantStatus::Deleting => "#9a4a00",
        TenantStatus::Deleted => "#5f6368",
        TenantStatus::Failed => "#b3261e",
    }
}

/// A readable duration: `850 ms`, `4.2 s`, `3.5 min`.
pub fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else {
        format!("{:.1} min", s / 60.0)
    }
}

/// The axis maximum: the smallest of 1, 2, 2.5, 4 or 5 times a power of ten
/// that holds `v`, so that quarters of it are round numbers (at least 1 s).
fn nice_ceiling(v: f64) -> f64 {
    let v = v.max(1.0);
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 4.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * magnitude)
}

/// p50 and p99 webhook-to-active latency per hour over the last `hours`
/// hours before `now`, as two lines on a time axis.
pub fn latency(buckets: &[ActivationLatency], now: DateTime<Utc>, hours: i32) -> String {
    let end = now
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    let start = end - Duration::hours(i64::from(hours) - 1);
    let max = nice_ceiling(
        buckets
            .iter()
            .map(|b| b.p99_seconds.max(b.p50_seconds))
            .fold(0.0_f64, f64::max)
            * 1.05,
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let span = f64::from((hours - 1).max(1));
    let x = |t: DateTime<Utc>| LEFT + plot_w * ((t - start).num_minutes() as f64 / 60.0) / span;
    let y = |s: f64| TOP + plot_h * (1.0 - s / max);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="latency-title"><title id="latency-title">Webhook-to-active latency, p50 and p99 per hour, last {hours} hours</title>"##
    );
    // Horizontal grid with labels at quarters of the range.
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let gy = y(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{gy:.1}" y2="{gy:.1}" stroke="#d0d4da" stroke-width="1"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#3c4043">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            gy + 4.0,
            seconds(v)
        );
    }
    // Hour labels, every few hours.
    let step = (hours / 6).max(1);
    for i in (0..hours).step_by(step as usize) {
        let t = start + Duration::hours(i64::from(i));
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle" fill="#3c4043">{}</text>"##,
            x(t),
            HEIGHT - 12.0,
            t.format("%H:00")
        );
    }
    for (label, colour, value) in [
        (
            "p50",
            "#1f5fbf",
            (|b: &ActivationLatency| b.p50_seconds) as fn(&ActivationLatency) -> f64,
        ),
        ("p99", "#b3261e", |b: &ActivationLatency| b.p99_seconds),
    ] {
        let points: Vec<String> = buckets
            .iter()
            .filter(|b| b.hour >= start)
            .map(|b| format!("{:.1},{:.1}", x(b.hour), y(value(b))))
            .collect();
        if points.len() > 1 {
            let _ = write!(
                svg,
                r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"##,
                points.join(" ")
            );
        }
        for b in buckets.iter().filter(|b| b.hour >= start) {
            let _ = write!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{colour}"><title>{label} {} at {} ({} tenants)</title></circle>"##,
                x(b.hour),
                y(value(b)),
                seconds(value(b)),
                b.hour.format("%H:00"),
                b.tenants
            );
        }
    }
    let _ = write!(
        svg,
        r##"<g font-size="12"><rect x="{}" y="{TOP}" width="10" height="10" fill="#1f5fbf"/><text x="{}" y="{}" fill="#202124">p50</text><rect x="{}" y="{TOP}" width="10" height="10" fill="#b3261e"/><text x="{}" y="{}" fill="#202124">p99</text></g>"##,
        LEFT + 8.0,
        LEFT + 22.0,
        TOP + 9.0,
        LEFT + 62.0,
        LEFT + 76.0,
        TOP + 9.0
    );
    if buckets.is_empty() {
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="14" text-anchor="middle" fill="#3c4043">No tenant became active in this time</text>"##,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Tenants by status as horizontal bars.
pub fn statuses(counts: &[(TenantStatus, i64)]) -> String {
    let row = 26.0;
    let label_w = 110.0;
    let height = row * counts.len() as f64 + 8.0;
    let max = counts.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1) as f64;
    let bar_w = WIDTH - label_w - 80.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="status-title"><title id="status-title">Tenants by status</title>"##
    );
    for (i, (status, n)) in counts.iter().enumerate() {
        let top = 4.0 + row * i as f64;
        let w = bar_w * (*n as f64) / max;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{:.1}" font-size="13" text-anchor="end" fill="#202124">{status}</text><rect x="{label_w}" y="{:.1}" width="{w:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="13" fill="#202124">{n}</text>"##,
            label_w - 8.0,
            top + 16.0,
            top + 3.0,
            row - 8.0,
            status_colour(*status),
            label_w + w + 6.0,
            top + 16.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A host's capacity as one bar: tenants, then warm spares, then free.
pub fn capacity(tenants: i64, spares: i64, capacity: i64) -> String {
    let w = 320.0;
    let h = 18.0;
    let total = capacity.max(tenants + spares).max(1) as f64;
    let tw = w * tenants as f64 / total;
    let sw = w * spares as f64 / total;
    format!(
        r##"<svg class="bar" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{tenants} tenants and {spares} spares of {capacity}"><rect x="0" y="0" width="{w}" height="{h}" fill="#e8eaed"/><rect x="0" y="0" width="{tw:.1}" height="{h}" fill="#1f5fbf"/><rect x="{tw:.1}" y="0" width="{sw:.1}" height="{h}" fill="#7fb0f0"/></svg>"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_chart_draws_both_percentiles() {
        let now = Utc::now();
        let hour = now.with_minute(0).unwrap();
        let svg = latency(
            &[ActivationLatency {
                hour,
                tenants: 3,
                p50_seconds: 1.5,
                p99_seconds: 4.0,
            }],
            now,
            12,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("p50 1.5 s"), "{svg}");
        assert!(svg.contains("p99 4.0 s"), "{svg}");
        assert!(!svg.contains("No tenant became active"));
        assert!(latency(&[], now, 12).contains("No tenant became active"));
    }

    #[test]
    fn capacity_bar_is_labelled_with_its_numbers() {
        let svg = capacity(3, 2, 10);
        assert!(svg.contains(r#"aria-label="3 tenants and 2 spares of 10""#));
        // A full host does not draw past its bar.
        assert!(capacity(20, 0, 10).contains(r#"width="320.0""#));
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.3), 1.0);
        assert_eq!(nice_ceiling(1.4), 2.0);
        assert_eq!(nice_ceiling(3.1), 4.0);
        assert_eq!(nice_ceiling(45.0), 50.0);
        assert_eq!(nice_ceiling(101.0), 200.0);
    }

    #[test]
    fn durations_read_in_a_sensible_unit() {
        assert_eq!(seconds(0.25), "250 ms");
        assert_eq!(seconds(4.2), "4.2 s");
        assert_eq!(seconds(300.0), "5.0 min");
    }
}
