//! The devices' durable state: what a durable write costs and how far group
//! commit carries a fleet, through the host's own state database (the
//! `wasi:keyvalue` imports' backend), on this machine's disk.
//!
//! 1. One device: `set` latency p50/p99 of a 64-byte value, against the
//!    same disk's floor measured in the same run (a 64-byte append and
//!    `fdatasync` of a plain file).
//! 2. Fleets of 1,000 and 10,000 devices (`STATE_FLEETS` to change), each
//!    writing once a second at its own phase for `STATE_SECS` seconds
//!    (default 5): writes a second, commits a second, writes per commit,
//!    and each device's p99 latency (the median and the worst device's),
//!    against one commit per write (the throughput without grouping,
//!    measured in the same run).
//! 3. Bytes on disk per queued telemetry reading (10,000 readings as the
//!    telemetry logic keeps them), against the reading's own bytes.
//!
//! Run: `cargo bench -p device-tests --bench state`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use host::state::StateDb;
use host_core::state::{Backend, Op, Quota};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fsync_floor(dir: &std::path::Path, n: usize) -> Vec<Duration> {
    let mut f = std::fs::File::create(dir.join("floor")).unwrap();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&[7u8; 64]).unwrap();
        f.sync_data().unwrap();
        out.push(t.elapsed());
    }
    out.sort();
    out
}

async fn one_device(db: &StateDb, n: usize) -> Vec<Duration> {
    let device: Arc<str> = "bench-one".into();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        db.write(
            device.clone(),
            vec![Op::Set(format!("k{}", i % 16), vec![7; 64])],
        )
        .await
        .unwrap();
        out.push(t.elapsed());
    }
    out.sort();
    out
}

struct FleetRun {
    writes: usize,
    secs: f64,
    commits: u64,
    median_p99: Duration,
    worst_p99: Duration,
}

async fn fleet(db: Arc<StateDb>, devices: usize, secs: u64) -> FleetRun {
    let commits_before = db.commits();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(devices);
    for d in 0..devices {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let device: Arc<str> = format!("bench-{d:05}").into();
            // Each device at its own phase within the second.
            let phase = Duration::from_micros(d as u64 * 1_000_000 / devices as u64);
            let mut latencies = Vec::new();
            for tick in 0..secs {
                let at = started + phase + Duration::from_secs(tick);
                tokio::time::sleep_until(at.into()).await;
                let t = Instant::now();
                db.write(
                    device.clone(),
                    vec![Op::Set("reading".into(), tick.to_le_bytes().to_vec())],
                )
                .await
                .unwrap();
                latencies.push(t.elapsed());
            }
            latencies.sort();
            percentile(&latencies, 0.99)
        }));
    }
    let mut p99s = Vec::with_capacity(devices);
    for t in tasks {
        p99s.push(t.await.unwrap());
    }
    let secs_taken = started.elapsed().as_secs_f64();
    p99s.sort();
    FleetRun {
        writes: devices * secs as usize,
        secs: secs_taken,
        commits: db.commits() - commits_before,
        median_p99: percentile(&p99s, 0.5),
        worst_p99: *p99s.last().unwrap(),
    }
}

/// Writes a second with one commit per write (no other writer to group with).
async fn ungrouped(db: &StateDb, n: usize) -> f64 {
    let device: Arc<str> = "bench-ungrouped".into();
    let t = Instant::now();
    for i in 0..n {
        db.write(
            device.clone(),
            vec![Op::Set(format!("k{}", i % 16), vec![7; 8])],
        )
        .await
        .unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

async fn queue_bytes(dir: &std::path::Path, readings: u64) -> (f64, f64) {
    let db = StateDb::open(
        dir,
        Quota {
            max_bytes: u64::MAX,
            max_keys: u64::MAX,
            ..Quota::default()
        },
    )
    .unwrap();
    let device: Arc<str> = "bench-queue".into();
    let mut own = 0usize;
    for chunk in (1..=readings).collect::<Vec<_>>().chunks(100) {
        let ops: Vec<Op> = chunk
            .iter()
            .map(|n| {
                let key = format!("telemetry/q/{n:020}");
                let value = format!(
                    r#"{{"reading":{n},"taken_ms":{}}}"#,
                    1_700_000_000_000u64 + n * 1000
                );
                own += key.len() + value.len();
                Op::Set(key, value.into_bytes())
            })
            .collect();
        db.write(device.clone(), ops).await.unwrap();
    }
    let file = std::fs::metadata(db.path()).unwrap().len() as f64;
    (file / readings as f64, own as f64 / readings as f64)
}

fn main() {
    let secs: u64 = std::env::var("STATE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let fleets: Vec<usize> = std::env::var("STATE_FLEETS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(StateDb::open(&dir.path().join("state"), Quota::default()).unwrap());

    let floor = fsync_floor(dir.path(), 300);
    let one = rt.block_on(one_device(&db, 300));
    println!("durable set, one device (64-byte value, 300 writes):");
    println!(
        "  set        p50 {:.2} ms  p99 {:.2} ms",
        ms(percentile(&one, 0.5)),
        ms(percentile(&one, 0.99))
    );
    println!(
        "  fdatasync  p50 {:.2} ms  p99 {:.2} ms   (the disk's floor; set/fdatasync p50 = {:.2}x)",
        ms(percentile(&floor, 0.5)),
        ms(percentile(&floor, 0.99)),
        percentile(&one, 0.5).as_secs_f64() / percentile(&floor, 0.5).as_secs_f64()
    );

    let alone = rt.block_on(ungrouped(&db, 300));
    println!("\none commit per write (no grouping): {alone:.0} writes/s");
    println!("\nfleet, each device writing once a second for {secs} s:");
    println!(
        "  devices  writes/s  commits/s  writes/commit  p99 median  p99 worst  vs one commit per write"
    );
    for devices in fleets {
        let run = rt.block_on(fleet(db.clone(), devices, secs));
        // The offered load spans `secs` seconds; a slower fleet takes longer.
        let rate = run.writes as f64 / run.secs.max(secs as f64);
        println!(
            "  {devices:>7}  {rate:>8.0}  {:>9.0}  {:>13.1}  {:>7.2} ms  {:>6.2} ms  {:.1}x",
            run.commits as f64 / run.secs.max(secs as f64),
            run.writes as f64 / run.commits.max(1) as f64,
            ms(run.median_p99),
            ms(run.worst_p99),
            rate / alone
        );
    }

    let (per_reading, own) = rt.block_on(queue_bytes(&dir.path().join("queue"), 10_000));
    println!(
        "\nqueued readings: {per_reading:.0} bytes on disk per reading ({own:.0} bytes of key and value; {:.2}x)",
        per_reading / own
    );
}
