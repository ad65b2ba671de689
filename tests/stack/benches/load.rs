//! Load benchmark of the services on this machine (no target yet: the numbers
//! start the table):
//!
//! - events/s accepted by `POST /api/v1/events` from 8 concurrent clients, with
//!   p50/p99 latency;
//! - executions/s completed by one worker (concurrency 1) running `core.noop`,
//!   and p50/p99 of synchronous `POST /api/v1/executions/execute` round trips.
//!
//! Run: `cargo bench -p attune-stack-tests --bench load` (EVENTS_SECONDS=5,
//! EXECUTIONS=300, ROUND_TRIPS=100 by default).

use std::time::{Duration, Instant};

use attune_stack_tests::{Stack, release_bins, wait_for};
use serde_json::{Value, json};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}

fn main() {
    let events_seconds = env_or("EVENTS_SECONDS", 5);
    let executions = env_or("EXECUTIONS", 300);
    let round_trips = env_or("ROUND_TRIPS", 100);
    eprintln!("building and starting the stack...");
    let s = Stack::start_with(release_bins(), &[], 1);

    // 1. Events from 8 clients.
    let end = Instant::now() + Duration::from_secs(events_seconds);
    let mut lat: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|c| {
                let api = attune_service::Client::new(&s.url, &s.token);
                scope.spawn(move || {
                    let mut l = vec![];
                    let mut n = 0u64;
                    while Instant::now() < end {
                        let t = Instant::now();
                        let body =
                            json!({"trigger_ref": "bench.none", "payload": {"client": c, "n": n}});
                        api.post::<_, Value>("/api/v1/events", &body)
                            .expect("event accepted");
                        l.push(t.elapsed());
                        n += 1;
                    }
                    l
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    lat.sort();
    let events_rate = lat.len() as f64 / events_seconds as f64;

    // 2. A backlog of core.noop drained by one worker.
    let started = Instant::now();
    let mut ids = vec![];
    for _ in 0..executions {
        let x: Value = s
            .api
            .post("/api/v1/executions", &json!({"action_ref": "core.noop"}))
            .unwrap()
            .unwrap();
        ids.push(x["data"]["id"].as_i64().unwrap());
    }
    let drained = wait_for(Duration::from_secs(600), || {
        let v: Value = s
            .api
            .get("/api/v1/executions?status=succeeded&action_ref=core.noop&page_size=1")
            .unwrap();
        v["pagination"]["total_items"].as_u64().unwrap_or(0) >= executions
    });
    assert!(
        drained,
        "the worker did not finish the backlog\n{}",
        s.logs()
    );
    let exec_rate = executions as f64 / started.elapsed().as_secs_f64();

    // 3. Synchronous round trips, one at a time.
    let mut rt = vec![];
    for _ in 0..round_trips {
        let t = Instant::now();
        let x: Value = s
            .api
            .post(
                "/api/v1/executions/execute",
                &json!({"action_ref": "core.noop"}),
            )
            .unwrap()
            .unwrap();
        assert_eq!(x["data"]["status"], "succeeded");
        rt.push(t.elapsed());
    }
    rt.sort();

    println!(
        "services load on {} cores (release builds, SQLite in memory, everything on 127.0.0.1)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "events      {:>8.0} events/s accepted, 8 clients, {} s; latency p50 {:.2} ms, p99 {:.2} ms",
        events_rate,
        events_seconds,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    println!(
        "executions  {exec_rate:>8.1} executions/s of core.noop by one worker (backlog of {executions})"
    );
    println!(
        "round trip  execute core.noop and wait: p50 {:.2} ms, p99 {:.2} ms over {round_trips}",
        percentile(&rt, 0.5),
        percentile(&rt, 0.99)
    );
}
