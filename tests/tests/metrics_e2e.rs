//! End to end: `--metrics-listen` during a fleet run against real
//! mosquitto, scraped with a real HTTP client; the counts match the run's
//! own summary line.

use std::collections::HashMap;
use std::time::Duration;

use device_tests::{Running, TestPki, host_run};
use host::broker::mosquitto::free_port;

const LIMIT: Duration = Duration::from_secs(90);

/// The value of every sample line of the OpenMetrics text, by series.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Sum of a metric's samples over its devices (and other labels).
fn total(samples: &HashMap<String, f64>, metric: &str, filter: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(&format!("{metric}{{")) && s.contains(filter))
        .map(|(_, v)| v)
        .sum()
}

/// The number before `what` in the summary line.
fn number_before(line: &str, what: &str) -> f64 {
    let at = line
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {line}"));
    line[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {what:?} in {line}"))
}

#[test]
fn a_fleet_is_scraped_and_the_counts_match_its_summary() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let port = free_port().unwrap();
    let mut fleet = Running::spawn(
        host_run(broker.port, &pki.ca, Some(&pki.device))
            .args([
                "--devices",
                "3",
                "--client-id",
                "metered",
                "--metrics-listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            // One iteration each, then a long idle wait: the counts hold
            // still while the summary and the scrape are taken.
            .args(["--iteration-delay-ms", "60000", "--publish-delay-ms", "20"]),
    );
    fleet.wait_for(
        &format!("metrics on http://127.0.0.1:{port}/metrics"),
        LIMIT,
    );
    // The summary every 5 s, once all three devices have done their one
    // iteration.
    let summary = fleet.wait_for(", 3 iterations done", LIMIT);
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut response = ureq::get(&url).call().expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.body_mut().read_to_string().unwrap();
    let s = samples(&text);

    assert_eq!(s["mqtt_device_devices"], 3.0);
    assert_eq!(
        total(&s, "mqtt_device_iterations_total", "result=\"ok\""),
        number_before(&summary, "iterations done"),
        "{summary}\n{text}"
    );
    assert_eq!(
        total(&s, "mqtt_device_acknowledgements_total", ""),
        number_before(&summary, "publishes acknowledged"),
        "{summary}\n{text}"
    );
    let failures = total(&s, "mqtt_device_iterations_total", "result=\"failed\"")
        + total(&s, "mqtt_device_stops_total", "")
        + total(&s, "mqtt_device_rollbacks_total", "");
    assert_eq!(failures, number_before(&summary, "failures"), "{summary}");
    assert_eq!(
        total(&s, "mqtt_device_connections_open", ""),
        number_before(&summary, "devices connected"),
        "{summary}"
    );
    // Per device, as the fleet is small.
    for device in ["metered-0001", "metered-0002", "metered-0003"] {
        let ok = format!("mqtt_device_iterations_total{{device=\"{device}\",result=\"ok\"}}");
        assert_eq!(s.get(&ok), Some(&1.0), "{ok}\n{text}");
        let connects = format!("mqtt_device_connect_latency_seconds_count{{device=\"{device}\"}}");
        assert_eq!(s.get(&connects), Some(&1.0), "{connects}\n{text}");
        let rtts = format!("mqtt_device_echo_round_trip_seconds_count{{device=\"{device}\"}}");
        assert_eq!(s.get(&rtts), Some(&5.0), "{rtts}\n{text}");
    }
    let missing = ureq::get(&format!("http://127.0.0.1:{port}/other")).call();
    assert!(
        matches!(missing, Err(ureq::Error::StatusCode(404))),
        "{missing:?}"
    );
    let _ = fleet.child.kill();
}
