//! End to end: a fleet spread over hosts. Three `host run --shard I/3`
//! processes (one by `--shard-count` and JOB_COMPLETION_INDEX, as in a
//! Kubernetes Indexed Job) cover 300 devices exactly once: an independent
//! subscriber sees 300 distinct client ids, no duplicates.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use device_tests::{Running, Subscriber, TestPki, host_run, output_within, text};

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn three_shards_cover_three_hundred_devices_exactly_once() {
    let pki = TestPki::new();
    let broker = pki.broker();
    let mut sub = Subscriber::start(broker.port, &pki, "+/example/topic");
    let shard = |index: u32| {
        let mut cmd = host_run(broker.port, &pki.ca, Some(&pki.device));
        cmd.args(["--devices", "300", "--client-id", "shard"])
            .args(["--iterations", "1", "--publish-count", "1"])
            .args(["--ramp-per-sec", "400"]);
        if index == 2 {
            cmd.args(["--shard-count", "3"])
                .env("JOB_COMPLETION_INDEX", "2");
        } else {
            cmd.args(["--shard", &format!("{index}/3")]);
        }
        Running::spawn(&mut cmd)
    };
    let hosts: Vec<Running> = (0..3).map(shard).collect();
    for (index, host) in hosts.into_iter().enumerate() {
        let (ok, stdout, stderr) = host.finish(LIMIT);
        assert!(ok, "shard {index}: {stderr}\n{stdout}");
        let first = index * 100 + 1;
        assert!(
            stdout.contains(&format!(
                "shard {index}/3: devices {first} to {} of 300",
                first + 99
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains("all 100 devices completed their iterations"),
            "{stdout}"
        );
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (topic, _) in sub.messages(300, Duration::from_secs(20)) {
        let id = topic.split('/').next().unwrap().to_string();
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "devices run twice: {twice:?}");
    let want: Vec<String> = (1..=300).map(|i| format!("shard-{i:04}")).collect();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), want);
}

#[test]
fn a_shard_without_a_broker_or_without_devices_is_refused() {
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(device_tests::host_bin());
        cmd.arg("run").arg(device_tests::demo_wasm()).args(args);
        cmd.env_remove("JOB_COMPLETION_INDEX");
        if let Some(index) = env {
            cmd.env("JOB_COMPLETION_INDEX", index);
        }
        let out = output_within(&mut cmd, LIMIT);
        let (_, stderr) = text(&out);
        (out.status.code(), stderr)
    };
    let cases: [(&[&str], Option<&str>, &str); 4] = [
        (&["--devices", "6", "--shard", "0/3"], None, "need --broker"),
        (
            &[
                "--devices",
                "2",
                "--shard",
                "0/3",
                "--broker",
                "mqtts://localhost:1",
                "--ca",
                "webpki",
            ],
            None,
            "has no device",
        ),
        (
            &["--devices", "6", "--shard-count", "3"],
            None,
            "JOB_COMPLETION_INDEX",
        ),
        (
            &["--devices", "6", "--shard", "3/3"],
            None,
            "INDEX goes from 0",
        ),
    ];
    for (args, env, want) in cases {
        let (code, stderr) = run(args, env);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(want), "{args:?}: {stderr}");
    }
}
