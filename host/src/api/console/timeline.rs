//! The run page's timeline (a Gantt chart): where a run's time went.
//!
//! One row for the queue (created → first started), then one row per step
//! with a bar per attempt (its status, duration and fuel in the tooltip),
//! the retry waits between a failed attempt and the next, and the time a
//! step was held or parked (`$wait_until`, a pending retry) without a
//! worker. Positions are percentages of the run's span, so the chart
//! scales with the page. Pure: built from stored records.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::format::{duration_ms, fuel};
use crate::store::{AttemptRecord, RunRecord, StepRecord, StepStatus};

/// Narrowest bar drawn, in percent (a 0 ms attempt stays visible).
const MIN_WIDTH: f64 = 0.6;

/// What a bar shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum BarKind {
    /// Waiting in the queue for a worker.
    Queued,
    /// An attempt that succeeded.
    Succeeded,
    /// An attempt that failed.
    Failed,
    /// An attempt failed by failure simulation (the piece was not called).
    Simulated,
    /// An attempt that was cancelled.
    Cancelled,
    /// An attempt still executing.
    Running,
    /// Between a failed attempt and the next one.
    RetryWait,
    /// Held or parked without a worker (`$wait_until`, a pending retry).
    Parked,
}

/// One bar.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Bar {
    /// What it shows.
    pub kind: BarKind,
    /// Left edge, percent of the span.
    pub left: f64,
    /// Width, percent of the span.
    pub width: f64,
    /// Short text on the bar (`#2`).
    pub label: String,
    /// The whole story, for the tooltip and screen readers.
    pub title: String,
}

/// One row of the chart.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// The step id (or `queue`).
    pub name: String,
    /// Its bars, in time order.
    pub bars: Vec<Bar>,
}

/// A labelled mark on the time axis.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Tick {
    /// Position, percent.
    pub at: f64,
    /// Offset from the run's creation (`1.5 s`).
    pub label: String,
}

/// The chart.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Timeline {
    /// The span shown (`1.2 s`).
    pub span: String,
    /// Rows: the queue first, then the steps in the workflow's order.
    pub rows: Vec<Row>,
    /// Axis marks.
    pub ticks: Vec<Tick>,
}

/// A stored time (RFC 3339) as an instant.
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(text)
        .or_else(|_| humantime::parse_rfc3339_weak(text))
        .ok()
}

fn since(t0: SystemTime, t: SystemTime) -> f64 {
    t.duration_since(t0).unwrap_or(Duration::ZERO).as_secs_f64() * 1000.0
}

struct Scale {
    t0: SystemTime,
    span_ms: f64,
}

impl Scale {
    fn bar(
        &self,
        kind: BarKind,
        from: SystemTime,
        to: SystemTime,
        label: String,
        title: String,
    ) -> Bar {
        let left = (since(self.t0, from) / self.span_ms * 100.0).clamp(0.0, 100.0);
        let right = (since(self.t0, to) / self.span_ms * 100.0).clamp(0.0, 100.0);
        let width = (right - left)
            .max(MIN_WIDTH)
            .min(100.0 - left.min(100.0 - MIN_WIDTH));
        Bar {
            kind,
            left: left.min(100.0 - MIN_WIDTH),
            width,
            label,
            title,
        }
    }
}

/// The timeline of `run` at `now`: `steps` in the workflow's order, each
/// with its attempts (oldest first).
pub(crate) fn timeline(
    run: &RunRecord,
    steps: &[(StepRecord, Vec<AttemptRecord>)],
    now: SystemTime,
) -> Timeline {
    let t0 = parse_time(&run.created_at).unwrap_or(now);
    let mut t1 = run
        .finished_at
        .as_deref()
        .and_then(parse_time)
        .unwrap_or(now);
    // Every recorded time fits (clocks of several processes may differ a little).
    for (step, attempts) in steps {
        for t in attempts.iter().filter_map(|a| parse_time(&a.finished_at)) {
            t1 = t1.max(t);
        }
        if let Some(t) = step.finished_at.as_deref().and_then(parse_time) {
            t1 = t1.max(t);
        }
    }
    let span_ms = since(t0, t1).max(1.0);
    let scale = Scale { t0, span_ms };
    let mut rows = Vec::with_capacity(steps.len() + 1);
    let started = run.started_at.as_deref().and_then(parse_time);
    let queued_until = started.unwrap_or(if run.status.is_terminal() { t1 } else { now });
    rows.push(Row {
        name: "queue".to_owned(),
        bars: vec![scale.bar(
            BarKind::Queued,
            t0,
            queued_until,
            String::new(),
            format!("queued for {}", duration_ms(since(t0, queued_until) as u64)),
        )],
    });
    for (step, attempts) in steps {
        rows.push(Row {
            name: step.step_id.clone(),
            bars: step_bars(&scale, step, attempts, now),
        });
    }
    let ticks = (0..=4)
        .map(|k| Tick {
            at: k as f64 * 25.0,
            label: duration_ms((span_ms * k as f64 / 4.0) as u64),
        })
        .collect();
    Timeline {
        span: duration_ms(span_ms as u64),
        rows,
        ticks,
    }
}

fn attempt_bar(scale: &Scale, attempt: &AttemptRecord, from: SystemTime, to: SystemTime) -> Bar {
    let kind = match attempt.status {
        StepStatus::Succeeded => BarKind::Succeeded,
        StepStatus::Cancelled => BarKind::Cancelled,
        _ if attempt.error_class.as_deref() == Some("simulated") => BarKind::Simulated,
        _ => BarKind::Failed,
    };
    let outcome = match (&attempt.error_class, &attempt.error_message) {
        (Some(class), Some(message)) => format!("{}: {class}: {message}", attempt.status),
        (Some(class), None) => format!("{}: {class}", attempt.status),
        _ => attempt.status.to_string(),
    };
    scale.bar(
        kind,
        from,
        to,
        format!("#{}", attempt.attempt),
        format!(
            "attempt {} · {} · fuel {} · {outcome}",
            attempt.attempt,
            duration_ms(attempt.duration_ms),
            fuel(attempt.fuel_used)
        ),
    )
}

fn step_bars(
    scale: &Scale,
    step: &StepRecord,
    attempts: &[AttemptRecord],
    now: SystemTime,
) -> Vec<Bar> {
    let mut bars = Vec::new();
    let mut last_end: Option<(SystemTime, bool)> = None; // (end, failed)
    for attempt in attempts {
        let (Some(from), Some(to)) = (
            parse_time(&attempt.started_at),
            parse_time(&attempt.finished_at),
        ) else {
            continue;
        };
        if let Some((end, true)) = last_end
            && from > end
        {
            bars.push(scale.bar(
                BarKind::RetryWait,
                end,
                from,
                String::new(),
                format!("retry wait {}", duration_ms(since(end, from) as u64)),
            ));
        }
        bars.push(attempt_bar(scale, attempt, from, to));
        last_end = Some((to, attempt.status == StepStatus::Failed));
    }
    let wake = step.wake_at.as_deref().and_then(parse_time);
    match step.status {
        StepStatus::Waiting => {
            if let Some((end, failed)) = last_end {
                let until = wake.unwrap_or(now).min(now).max(end);
                let (kind, what) = if failed && step.output.is_none() {
                    (BarKind::RetryWait, "retry wait")
                } else {
                    (BarKind::Parked, "parked")
                };
                let due = step.wake_at.clone().unwrap_or_default();
                bars.push(scale.bar(
                    kind,
                    end,
                    until,
                    String::new(),
                    format!("{what} until {due}"),
                ));
            }
        }
        StepStatus::Running => {
            let from = last_end
                .map(|(end, _)| end)
                .or_else(|| step.started_at.as_deref().and_then(parse_time))
                .unwrap_or(now);
            bars.push(scale.bar(
                BarKind::Running,
                from,
                now.max(from),
                format!("#{}", step.attempts + 1),
                format!("attempt {} running", step.attempts + 1),
            ));
        }
        StepStatus::Succeeded => {
            // Held by `$wait_until` after the attempt that succeeded.
            if let (Some((end, false)), Some(done)) =
                (last_end, step.finished_at.as_deref().and_then(parse_time))
                && since(end, done) >= 50.0
            {
                bars.push(scale.bar(
                    BarKind::Parked,
                    end,
                    done,
                    String::new(),
                    format!("parked {}", duration_ms(since(end, done) as u64)),
                ));
            }
        }
        _ => {}
    }
    bars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunStatus;

    fn at(ms: u64) -> String {
        crate::store::rfc3339(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(ms),
        )
    }

    fn run(finished: Option<u64>) -> RunRecord {
        RunRecord {
            id: uuid::Uuid::now_v7(),
            workflow_name: "w".into(),
            workflow_version: 1,
            status: if finished.is_some() {
                RunStatus::Succeeded
            } else {
                RunStatus::Running
            },
            priority: crate::store::Priority::Normal,
            trigger: serde_json::json!({}),
            vars: serde_json::json!({}),
            simulated: false,
            created_at: at(0),
            started_at: Some(at(100)),
            finished_at: finished.map(at),
            total_time_ms: None,
            error: None,
        }
    }

    fn attempt(
        n: u32,
        from: u64,
        to: u64,
        status: StepStatus,
        class: Option<&str>,
    ) -> AttemptRecord {
        AttemptRecord {
            attempt: n,
            status,
            input: None,
            output: None,
            error_class: class.map(str::to_owned),
            error_message: class.map(|_| "boom".to_owned()),
            logs: String::new(),
            fuel_used: 1_500_000,
            duration_ms: to - from,
            started_at: at(from),
            finished_at: at(to),
        }
    }

    fn step(id: &str, status: StepStatus, finished: Option<u64>) -> StepRecord {
        let mut s = StepRecord::pending(id);
        s.status = status;
        s.finished_at = finished.map(at);
        s
    }

    #[test]
    fn attempts_retry_waits_and_parked_time_are_placed_on_the_run_span() {
        let r = run(Some(1000));
        let steps = vec![
            (
                step("flaky", StepStatus::Succeeded, Some(600)),
                vec![
                    attempt(1, 100, 200, StepStatus::Failed, Some("simulated")),
                    attempt(2, 400, 600, StepStatus::Succeeded, None),
                ],
            ),
            (
                step("hold", StepStatus::Succeeded, Some(1000)),
                vec![attempt(1, 600, 700, StepStatus::Succeeded, None)],
            ),
        ];
        let t = timeline(&r, &steps, SystemTime::now());
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[0].bars[0].kind, BarKind::Queued);
        assert!((t.rows[0].bars[0].width - 10.0).abs() < 0.01);
        let kinds: Vec<_> = t.rows[1].bars.iter().map(|b| b.kind).collect();
        assert_eq!(
            kinds,
            [BarKind::Simulated, BarKind::RetryWait, BarKind::Succeeded]
        );
        let wait = &t.rows[1].bars[1];
        assert!((wait.left - 20.0).abs() < 0.01 && (wait.width - 20.0).abs() < 0.01);
        assert!(
            t.rows[1].bars[0].title.contains("fuel 1.5 M"),
            "{}",
            t.rows[1].bars[0].title
        );
        let kinds: Vec<_> = t.rows[2].bars.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, [BarKind::Succeeded, BarKind::Parked]);
        assert!((t.rows[2].bars[1].left - 70.0).abs() < 0.01);
        assert_eq!(t.span, "1.0 s");
        assert_eq!(t.ticks.last().unwrap().at, 100.0);
    }

    #[test]
    fn a_running_step_extends_to_now_and_bars_stay_inside_the_chart() {
        let r = run(None);
        let now = parse_time(&at(2000)).unwrap();
        let mut running = step("slow", StepStatus::Running, None);
        running.started_at = Some(at(150));
        let t = timeline(&r, &[(running, vec![])], now);
        let bar = &t.rows[1].bars[0];
        assert_eq!(bar.kind, BarKind::Running);
        assert!(bar.left >= 0.0 && bar.left + bar.width <= 100.0 + 1e-9);
        assert!((bar.left - 7.5).abs() < 0.01);
    }
}
