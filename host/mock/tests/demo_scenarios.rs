//! The real `demo.wasm` in the mock host: what the demo's scenario file
//! (tests/scenarios/demo.toml, run by `host test`) cannot say. Backoff
//! sleeps derived from the Full-Jitter formula and the seed, fresh packet
//! ids, how bytes really reached the guest, a mock host that runs on after a
//! trap, and the default iteration timeout against the slowest legal
//! iteration. Every other case of the demo is in the file.

use mqttbytes::QoS;
use mqttbytes::v4::{Packet, PubAck, SubAck, SubscribeReasonCode};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use mock_host::{
    Call, Delivery, IterationFailure, MockHost, Scenario, Script, Step, Stop, TransportError,
    default_settings,
};
use mqtt_core::packets::packet_name;

fn host() -> &'static MockHost {
    mock_host::demo_host()
}

/// The Full-Jitter delays the guest must sleep for `seed`: the mock's
/// entropy seeds the guest's ChaCha20, whose numbers go through the policy.
fn full_jitter(seed: u64, windows: &[u32]) -> Vec<u32> {
    let mut host_rng = ChaCha20Rng::seed_from_u64(seed);
    let mut guest_seed = [0u8; 32];
    host_rng.fill_bytes(&mut guest_seed);
    let mut guest_rng = ChaCha20Rng::from_seed(guest_seed);
    windows
        .iter()
        .map(|w| guest_rng.next_u32() % (w + 1))
        .collect()
}

/// Expects SUBSCRIBE and answers SUBACK with failure (0x80).
fn reject_subscribe() -> Step {
    Step::Expect(
        "SUBSCRIBE",
        Box::new(|p| match p {
            Packet::Subscribe(s) => vec![Packet::SubAck(SubAck::new(
                s.pkid,
                vec![SubscribeReasonCode::Failure],
            ))],
            _ => vec![],
        }),
    )
}

fn refused(n: usize) -> impl Iterator<Item = Step> {
    (0..n).map(|_| Step::RefuseConnect(TransportError::ConnectionRefused))
}

/// The packets of one happy iteration, checked field by field.
fn assert_happy_iteration(sent: &[Packet]) {
    let s = default_settings();
    let names: Vec<_> = sent.iter().map(packet_name).collect();
    let mut want = vec!["CONNECT", "SUBSCRIBE"];
    for _ in 0..5 {
        want.extend(["PUBLISH", "PUBACK"]);
    }
    want.extend(["UNSUBSCRIBE", "DISCONNECT"]);
    assert_eq!(names, want);

    let Packet::Connect(c) = &sent[0] else {
        unreachable!()
    };
    assert!(c.clean_session);
    assert_eq!(c.keep_alive, 60);
    assert_eq!(c.client_id, s.client_id);
    assert_eq!(c.login, None);

    let Packet::Subscribe(sub) = &sent[1] else {
        unreachable!()
    };
    assert_eq!(sub.filters.len(), 1);
    assert_eq!(sub.filters[0].path, s.topic);
    assert_eq!(sub.filters[0].qos, QoS::AtLeastOnce);

    let mut ids = Vec::new();
    for pair in sent[2..12].chunks(2) {
        let Packet::Publish(p) = &pair[0] else {
            unreachable!()
        };
        assert_eq!(
            (p.topic.as_str(), &p.payload[..]),
            (s.topic.as_str(), &b"Hello World!"[..])
        );
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert!(!p.dup && !p.retain);
        assert_ne!(p.pkid, 0);
        assert!(!ids.contains(&p.pkid), "fresh packet id each time");
        ids.push(p.pkid);
        // The echo is acknowledged with the broker's packet id (the mock uses 1).
        assert_eq!(pair[1], Packet::PubAck(PubAck::new(1)));
    }
    let Packet::Unsubscribe(u) = &sent[12] else {
        unreachable!()
    };
    assert_eq!(u.topics, vec![s.topic.clone()]);
}

/// The golden sleeps of tests/scenarios/demo.toml are the Full-Jitter
/// formula's: the mock's entropy seeds the guest's ChaCha20, whose numbers
/// go through the policy.
#[test]
fn backoff_sleeps_are_the_full_jitter_formula_for_the_seed() {
    let mut scenario = Scenario::new(Script::steps(refused(3)));
    scenario.seed = 42;
    let out = host().run(scenario);
    assert_eq!(out.sleeps()[..3], full_jitter(42, &[500, 1000, 2000]));

    let mut scenario = Scenario::new(Script::steps(refused(6)));
    scenario.seed = 7;
    let out = host().run(scenario);
    assert_eq!(out.sleeps(), full_jitter(7, &[500, 1000, 2000, 4000, 5000]));

    let mut scenario = Scenario::new(Script::steps([
        Step::Auto(1),
        reject_subscribe(),
        reject_subscribe(),
    ]));
    scenario.seed = 3;
    let out = host().run(scenario);
    assert_eq!(out.sleeps()[..2], full_jitter(3, &[500, 1000]));

    let mut scenario = Scenario::new(Script::steps([
        Step::Auto(4),
        Step::swallow("PUBLISH"),
        Step::Close,
        Step::RefuseConnect(TransportError::ConnectionRefused),
    ]));
    scenario.seed = 11;
    let out = host().run(scenario);
    assert_eq!(out.sleeps()[1], full_jitter(11, &[500])[0]);
}

#[test]
fn s07_one_byte_per_read_behaves_like_the_happy_iteration() {
    let out = host().run(Scenario::new(Script::auto().delivery(Delivery::OneByte)));
    assert!(out.result().is_ok(), "{:?}", out.result());
    assert_happy_iteration(&out.sent());
    let reads = out
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Received(b) if b.len() == 1))
        .count();
    assert!(
        reads > 50,
        "bytes really came one at a time ({reads} reads)"
    );
}

#[test]
fn s07_several_packets_in_one_read_behave_like_the_happy_iteration() {
    let out = host().run(Scenario::new(Script::auto()));
    assert_happy_iteration(&out.sent());
    // PUBACK and the echo come in one read.
    let multi = out
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Received(b) if b.len() > 4 + 35))
        .count();
    assert!(multi >= 5, "{multi} reads carried more than one packet");
}

#[test]
fn s10_a_trap_restarts_the_guest_on_a_fresh_instance_as_the_host_does() {
    let out = host().run(Scenario::new(Script::steps([
        Step::Auto(2),
        Step::Trap("injected fault".into()),
    ])));
    assert_eq!(out.stops.len(), 1);
    assert!(
        matches!(&out.stops[0], Stop::Trap { message, .. } if message.contains("injected fault")),
        "{:?}",
        out.stops
    );
    // Restarted after a Full-Jitter wait, on a new instance that seeds its
    // generator again; the next iteration succeeds.
    assert_eq!(out.aborted, None);
    assert!(out.result().is_ok(), "{:?}", out.result());
    let instances = out
        .calls
        .iter()
        .filter(|c| **c == Call::Instantiate)
        .count();
    assert_eq!(instances, 2);
    assert!(
        out.calls
            .iter()
            .any(|c| matches!(c, Call::HostWait(ms) if *ms <= 500))
    );
    // The same mock host runs the next scenario normally.
    let again = host().run(Scenario::new(Script::auto()));
    assert!(again.result().is_ok());
}

/// The demo declares its slowest legal iteration as its bound (the host's
/// default iteration timeout): a run through the slow paths at once
/// (connects refused and retried, the subscription rejected and retried,
/// no acknowledgement, every process loop and idle wait in full) stays
/// inside it.
#[test]
fn slow_legal_paths_stay_inside_the_default_iteration_timeout() {
    let mut steps: Vec<Step> = refused(5).collect();
    steps.push(Step::Auto(1));
    steps.extend((0..5).map(|_| reject_subscribe()));
    steps.push(Step::expect_auto("SUBSCRIBE"));
    steps.extend((0..5).map(|_| Step::swallow("PUBLISH")));
    steps.push(Step::swallow("UNSUBSCRIBE"));
    let mut scenario = Scenario::new(Script::steps(steps));
    scenario.seed = 5;
    let out = host().run(scenario);
    assert!(
        matches!(out.result(), Err(IterationFailure::TimedOut(_))),
        "{:?}",
        out.result()
    );
    assert_eq!(out.steps_left, 0, "every slow path was taken");
    let bounds = out.declared_bounds();
    assert_eq!(bounds.len(), 1, "declared once, at the start: {bounds:?}");
    let bound = bounds[0];
    assert_eq!(bound, 851_950, "the bound with the default settings");
    assert!(
        out.now_ms > 20_000 && out.now_ms < bound,
        "{} ms of virtual time, bound {bound} ms",
        out.now_ms
    );
}
