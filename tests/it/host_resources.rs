//! Host memory a guest can grow through `wasi:http` resources (header
//! fields, unread responses, filled outgoing bodies) is budgeted per attempt:
//! the hostile guest `hostile-host-resources` ends `resource-limit` and the
//! host's memory stays bounded. Real sockets on 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use omniflow::capabilities::http::{Grant, HttpGrants};
use omniflow::capabilities::secrets::Secrets;
use omniflow::runtime::{StepCall, StepFailure, StepLimits};
use serde_json::json;

use crate::support::{load, runtime};
use crate::wire::FakeServer;

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test]
async fn host_resources_are_budgeted_per_attempt() {
    let server = FakeServer::start().await;
    let piece = load("hostile_host_resources").await;
    let grants = HttpGrants::new(
        vec![Grant::parse(&server.origin(), &[]).unwrap()],
        Secrets::empty(),
    );
    let authority = server.origin().trim_start_matches("http://").to_string();

    // Sample RSS while the attacks run: the peak is what matters.
    let before = rss();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // Unbounded, each attack would hold about 1 GiB of host memory.
    for (action, input) in [
        ("fields", json!({ "count": 50_000 })),
        (
            "responses",
            json!({ "count": 250, "authority": authority, "response_bytes": 4 << 20 }),
        ),
        ("bodies", json!({ "count": 1_000 })),
    ] {
        let mut call = StepCall::new("run", "hostile", action, input);
        call.limits = StepLimits {
            memory_bytes: 32 << 20,
            timeout: Duration::from_secs(60),
            ..StepLimits::default()
        };
        call.http = grants.clone();
        let report = runtime().run(&piece, call).await;
        let failure = report.outcome.as_ref().err();
        assert!(
            matches!(failure, Some(StepFailure::ResourceLimit { .. })),
            "{action}: {:?}\n{}",
            report.outcome,
            report.log
        );
        assert_eq!(failure.unwrap().class(), "resource-limit");
        eprintln!("{action}: {}", failure.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(before);
    eprintln!("peak RSS growth: {} MiB", growth >> 20);
    assert!(growth < 300 << 20, "host RSS grew by {} MiB", growth >> 20);
}
