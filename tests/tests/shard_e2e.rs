//! End to end: a fleet spread over hosts. Three `host run --shard I/3`
//! processes (one by `--shard-count` and JOB_COMPLETION_INDEX, as in a
//! Kubernetes Indexed Job) cover 300 devices exactly once: an independent
//! subscriber sees 300 distinct client ids, no duplicates.

use std::collections::BTreeMap;
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
    // Every shard has exited, so every message is on its way: read past the
    // 300th (for 5 s), so that a device run twice would show.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (topic, _) in sub.messages(usize::MAX, Duration::from_secs(5)) {
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
        let mut cmd = device_tests::host();
        cmd.arg("run").arg(device_tests::demo_wasm()).args(args);
        cmd.env_remove("JOB_COMPLETION_INDEX");
        if let Some(index) = env {
            cmd.env("JOB_COMPLETION_INDEX", index);
        }
        let out = output_within(&mut cmd, LIMIT);
        let (_, stderr) = text(&out);
        (out.status.code(), stderr)
    };
    let cases: [(&[&str], Option<&str>, &str); 5] = [
        (
            &["--devices", "6", "--shard", "0/3", "--client-id", "s"],
            None,
            "need --broker",
        ),
        (
            &["--devices", "6", "--shard", "0/3"],
            None,
            "need --client-id",
        ),
        (
            &[
                "--devices",
                "2",
                "--client-id",
                "s",
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

/// The container arguments of deploy/kubernetes/fleet-job.yaml, as written.
fn manifest_args() -> Vec<String> {
    let text =
        std::fs::read_to_string(device_tests::root().join("deploy/kubernetes/fleet-job.yaml"))
            .unwrap();
    let mut lines = text.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    for line in lines.by_ref() {
        match line.trim().strip_prefix("- ") {
            Some(arg) => args.push(arg.to_string()),
            None => break,
        }
    }
    assert!(args.len() > 5, "{args:?}");
    args
}

#[test]
fn the_kubernetes_jobs_arguments_run_a_shard_as_its_pod_would() {
    // The pod's command line, with what a cluster provides swapped for this
    // machine's: the broker, the secret's files, and fewer devices (a later
    // flag wins).
    let pki = TestPki::new();
    let broker = pki.broker();
    let mut args: Vec<String> = manifest_args()
        .into_iter()
        .map(|a| match a.split_once('=') {
            Some(("--broker", _)) => format!("--broker=mqtts://localhost:{}", broker.port),
            Some(("--ca", _)) => format!("--ca={}", pki.ca.display()),
            Some(("--cert", _)) => format!("--cert={}", pki.device.cert.display()),
            Some(("--key", _)) => format!("--key={}", pki.device.key.display()),
            _ if a.ends_with("demo.wasm") => device_tests::demo_wasm().display().to_string(),
            _ => a,
        })
        .collect();
    assert_eq!(args[0], "run", "the image's entry point is `host`");
    assert!(args.contains(&"--shard-count=3".to_string()), "{args:?}");
    args.extend(
        [
            "--devices=30",
            "--iterations=1",
            "--publish-count=1",
            "--publish-delay-ms=50",
            "--metrics-listen=127.0.0.1:0",
        ]
        .map(String::from),
    );
    let mut cmd = device_tests::host();
    cmd.args(&args)
        .env("JOB_COMPLETION_INDEX", "1")
        .env("RUST_LOG", "info");
    let out = output_within(&mut cmd, LIMIT);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{args:?}\n{stderr}\n{stdout}");
    assert!(
        stdout.contains("shard 1/3: devices 11 to 20 of 30"),
        "{stdout}"
    );
    assert!(
        stdout.contains("all 10 devices completed their iterations"),
        "{stdout}"
    );
}
