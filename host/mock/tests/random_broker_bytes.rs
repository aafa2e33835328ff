//! Property test: random broker bytes, delivered at different points of an
//! iteration, never make the real guest trap, panic or loop. Cases are
//! bounded for CI; `MOCK_FUZZ_CASES=100000 cargo test --release -p mock-host
//! --test random_broker_bytes` runs a longer campaign.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use mock_host::{MockHost, Scenario, Script, Step};

fn host() -> &'static MockHost {
    mock_host::demo_host()
}

/// Valid packets the broker might send, as seeds for mutation.
const SEEDS: &[&[u8]] = &[
    &[0x20, 0x02, 0x00, 0x00],                                     // CONNACK
    &[0x90, 0x03, 0x00, 0x01, 0x01],                               // SUBACK
    &[0x40, 0x02, 0x00, 0x02],                                     // PUBACK
    &[0xb0, 0x02, 0x00, 0x03],                                     // UNSUBACK
    &[0xd0, 0x00],                                                 // PINGRESP
    &[0x32, 0x08, 0x00, 0x01, b't', 0x00, 0x05, b'h', b'i', b'!'], // PUBLISH QoS 1
];

fn random_bytes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.next_u32() % 4 {
        if rng.next_u32().is_multiple_of(2) {
            let mut p = SEEDS[rng.next_u32() as usize % SEEDS.len()].to_vec();
            for _ in 0..rng.next_u32() % 3 {
                let i = rng.next_u32() as usize % p.len();
                p[i] = rng.next_u32() as u8;
            }
            if rng.next_u32().is_multiple_of(4) {
                p.truncate(rng.next_u32() as usize % p.len());
            }
            out.extend(p);
        } else {
            let n = rng.next_u32() % 24;
            out.extend((0..n).map(|_| rng.next_u32() as u8));
        }
    }
    out
}

#[test]
fn random_broker_bytes_never_trap_the_guest() {
    let cases: u64 = std::env::var("MOCK_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (mut ok, mut violations) = (0u64, 0u64);
    for case in 0..cases {
        let mut rng = ChaCha8Rng::seed_from_u64(case);
        let bytes = random_bytes(&mut rng);
        // Deliver them after 0..=3 automatic answers (at CONNACK, SUBACK,
        // PUBACK/echo, or later), then let the broker go quiet or close.
        let at = (rng.next_u32() % 4) as usize;
        let mut steps = Vec::new();
        if at > 0 {
            steps.push(Step::Auto(at));
        }
        steps.push(Step::Send(bytes.clone()));
        if rng.next_u32().is_multiple_of(2) {
            steps.push(Step::Close);
        }
        let mut scenario = Scenario::new(Script::steps(steps));
        scenario.seed = case;
        scenario.settings.publish_count = 2;
        let out = host().run(scenario);
        assert!(
            out.stops.is_empty() && out.aborted.is_none(),
            "case {case}: bytes {bytes:02x?} at step {at}: stops {:?}, aborted {:?}",
            out.stops,
            out.aborted
        );
        assert_eq!(out.results.len(), 1, "case {case}");
        match out.result() {
            Ok(_) => ok += 1,
            Err(mock_host::IterationFailure::ProtocolViolation(_)) => violations += 1,
            Err(_) => {}
        }
    }
    // The cases reach both outcomes: the generator is not trivially benign.
    assert!(
        ok > 0 && violations > 0,
        "{ok} ok, {violations} protocol violations of {cases}"
    );
}
