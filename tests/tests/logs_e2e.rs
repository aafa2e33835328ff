//! End to end: `--log-format json` against real mosquitto: every stdout
//! line is one JSON object with timestamp, level and message, and device
//! lines carry the device, the iteration and, where the line names one,
//! the MQTT packet id.

use std::time::Duration;

use device_tests::{TestPki, host_run, output_within, text};

const LIMIT: Duration = Duration::from_secs(90);

#[test]
fn json_logs_are_one_object_per_line_with_device_iteration_and_packet_id() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let out = output_within(
        host_run(broker.port, &pki.ca, Some(&pki.device)).args([
            "--log-format",
            "json",
            "--client-id",
            "jsonl",
            "--iterations",
            "2",
        ]),
        LIMIT,
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    assert!(lines.len() > 20, "{stdout}");
    for line in &lines {
        for key in ["timestamp", "level", "message"] {
            assert!(line[key].is_string(), "no {key}: {line}");
        }
    }
    let device_lines: Vec<_> = lines.iter().filter(|l| l["device"] == "jsonl").collect();
    // The logic's own lines (target "device") all fall in an iteration.
    let guest_lines = device_lines.iter().filter(|l| l["target"] == "device");
    for l in guest_lines {
        assert!(l["iteration"].as_u64().is_some_and(|i| i >= 1), "{l}");
    }
    let completed: Vec<_> = device_lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .contains("completed successfully: 5 published")
        })
        .collect();
    assert_eq!(completed.len(), 2, "{stdout}");
    assert_eq!(completed[1]["iteration"], 2);
    assert_eq!(completed[1]["published"], 5);
    let pubacks: Vec<_> = device_lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .contains("PUBACK received for packet Id")
        })
        .collect();
    assert_eq!(pubacks.len(), 10, "{stdout}");
    for p in pubacks {
        let id = p["packet_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("no packet_id: {p}"));
        assert!(
            p["message"]
                .as_str()
                .unwrap()
                .contains(&format!("packet Id {id}.")),
            "{p}"
        );
    }
}
