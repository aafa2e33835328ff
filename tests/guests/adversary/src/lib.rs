//! Test-only device logic that attacks its sandbox. The client id picks the
//! attack (`host run adversary.wasm --client-id spin`):
//! - `connect-elsewhere`: connects to hosts and ports it was not given;
//! - `spin`: computes forever without calling the host;
//! - `grow-memory`: allocates without end;
//! - `recurse`: recurses without end;
//! - `huge-recv`: asks `receive` for 4 GiB and `send` for 2 MiB;
//! - `too-many-connections`: opens connections until refused;
//! - `trap-mid-publish`: sends half a PUBLISH, then panics;
//! - `escape-wasi`: reaches for files, environment and raw sockets through WASI;
//! - `spin-with-imports`: computes in short bursts, calling `clock.now-ms`
//!   between them, forever;
//! - `hang`: opens an MQTT session, then sleeps a second at a time, forever;
//! - `hang-declared`: declares a bound of 1500 ms for its iteration
//!   (`iteration.declare-bound`), then sleeps a second at a time, forever;
//! - `flood-log`: writes log lines without end;
//! - `flood-stdout`: prints to stdout without end;
//! - `storm`: connects and closes without pause, forever;
//! - `one-ATTACK-NNNN` (a fleet's device ids): device 0002 runs ATTACK
//!   (`traps` panics), the others run the demo;
//! - `ATTACK-NNNN` (a fleet named after the attack): every device runs it.
//!
//! Each returns the error the host answered (so a test sees it), traps, or
//! never returns.

#![deny(unsafe_code)]

use guest::bindings::mqtt_device::runtime::log::{Level, write};
use guest::bindings::mqtt_device::runtime::mtls_socket::{self, ErrorCode};
use guest::bindings::mqtt_device::runtime::types::{IterationError, IterationReport, Settings};
use guest::bindings::mqtt_device::runtime::{clock, iteration};

/// The component's export.
pub struct Adversary;

fn report() -> IterationReport {
    guest::device::Report::default().into()
}

fn denied(code: ErrorCode) -> Result<IterationReport, IterationError> {
    write(Level::Info, &format!("the host answered {}", code.name()));
    Err(IterationError::TransportPermanent(code))
}

#[inline(never)]
#[allow(
    unconditional_recursion,
    reason = "recursing without end is the attack"
)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    pad[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    recurse(depth + 1, &mut next) + u64::from(pad[0])
}

impl guest::bindings::Guest for Adversary {
    fn run_iteration(
        settings: Settings,
        iteration: u32,
    ) -> Result<IterationReport, IterationError> {
        let host = settings.broker_host.as_str();
        let port = settings.broker_port;
        let attack = match settings.client_id.strip_prefix("one-") {
            Some(rest) => match rest.rsplit_once('-') {
                Some((attack, "0002")) => attack.to_string(),
                _ => {
                    return guest::wit::run_demo(settings, iteration);
                }
            },
            // A fleet named after the attack: every device runs it.
            None => match settings.client_id.rsplit_once('-') {
                Some((attack, n)) if n.len() == 4 && n.bytes().all(|b| b.is_ascii_digit()) => {
                    attack.to_string()
                }
                _ => settings.client_id.clone(),
            },
        };
        match attack.as_str() {
            "traps" => panic!("device 0002 traps, as planned"),
            "spin-with-imports" => {
                let mut x = 0u64;
                loop {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                    std::hint::black_box(clock::now_ms());
                }
            }
            "hang" => {
                let conn = match mtls_socket::connect(host, port, 5000) {
                    Ok(c) => c,
                    Err(code) => return denied(code),
                };
                // CONNECT with client id "hang", so the broker knows the session.
                let connect = [
                    0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00,
                    0x04, b'h', b'a', b'n', b'g',
                ];
                let _ = conn.send(&connect, 1000);
                write(Level::Info, "session open; hanging");
                loop {
                    clock::sleep_ms(1000);
                }
            }
            "hang-declared" => {
                iteration::declare_bound(1500);
                write(Level::Info, "declared 1500 ms; hanging");
                loop {
                    clock::sleep_ms(1000);
                }
            }
            "flood-log" => {
                let line = "flood ".repeat(20);
                for n in 0u64.. {
                    write(Level::Info, &format!("{n} {line}"));
                }
                unreachable!()
            }
            "flood-stdout" => {
                let line = "flood ".repeat(20);
                for n in 0u64.. {
                    println!("{n} {line}");
                }
                unreachable!()
            }
            "storm" => loop {
                if let Ok(conn) = mtls_socket::connect(host, port, 5000) {
                    conn.close();
                }
            },
            "connect-elsewhere" => {
                for (h, p) in [
                    ("example.com", 443),
                    (host, port.wrapping_add(1)),
                    ("127.0.0.1", port),
                ] {
                    match mtls_socket::connect(h, p, 1000) {
                        Ok(_) => write(
                            Level::Error,
                            &format!("connected to {h}:{p}: the sandbox leaked"),
                        ),
                        Err(ErrorCode::NotPermitted) => {
                            write(Level::Info, &format!("{h}:{p}: not permitted"))
                        }
                        Err(code) => return denied(code),
                    }
                }
                denied(ErrorCode::NotPermitted)
            }
            "spin" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "grow-memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                let mut pad = [0u8; 256];
                let n = recurse(0, &mut pad);
                write(Level::Info, &format!("{n}"));
                Ok(report())
            }
            "huge-recv" => {
                let conn = match mtls_socket::connect(host, port, 5000) {
                    Ok(c) => c,
                    Err(code) => return denied(code),
                };
                if let Err(code) = conn.receive(u32::MAX, 100) {
                    write(Level::Info, &format!("receive of 4 GiB: {}", code.name()));
                    if let Err(code) = conn.send(&vec![0u8; 2 << 20], 100) {
                        write(Level::Info, &format!("send of 2 MiB: {}", code.name()));
                        return denied(code);
                    }
                    return denied(code);
                }
                Ok(report())
            }
            "too-many-connections" => {
                let mut open = Vec::new();
                loop {
                    match mtls_socket::connect(host, port, 5000) {
                        Ok(c) => open.push(c),
                        Err(code) => {
                            write(
                                Level::Info,
                                &format!(
                                    "refused after {} connections: {}",
                                    open.len(),
                                    code.name()
                                ),
                            );
                            return denied(code);
                        }
                    }
                }
            }
            "trap-mid-publish" => {
                let conn = match mtls_socket::connect(host, port, 5000) {
                    Ok(c) => c,
                    Err(code) => return denied(code),
                };
                // The first half of a PUBLISH: fixed header and half a topic.
                let _ = conn.send(&[0x32, 0x20, 0x00, 0x10, b'h', b'a', b'l', b'f'], 200);
                panic!("trapping in the middle of a publish");
            }
            "escape-wasi" => {
                let mut leaks = Vec::new();
                if let Ok(entries) = std::fs::read_dir("/") {
                    leaks.push(format!("listed / ({} entries)", entries.count()));
                }
                if std::fs::read("/etc/hostname").is_ok() {
                    leaks.push("read /etc/hostname".to_string());
                }
                let vars = std::env::vars().count();
                if vars > 0 {
                    leaks.push(format!("saw {vars} environment variables"));
                }
                if std::net::TcpStream::connect((host, port)).is_ok() {
                    leaks.push("opened a raw TCP socket".to_string());
                }
                if leaks.is_empty() {
                    write(
                        Level::Info,
                        "files, environment and raw sockets: all denied",
                    );
                    denied(ErrorCode::NotPermitted)
                } else {
                    write(
                        Level::Error,
                        &format!("the sandbox leaked: {}", leaks.join(", ")),
                    );
                    Ok(report())
                }
            }
            other => {
                write(Level::Error, &format!("unknown attack {other:?}"));
                Ok(report())
            }
        }
    }
}

#[allow(unsafe_code, reason = "generated by wit-bindgen's export macro")]
mod export {
    use super::Adversary;
    guest::bindings::export!(Adversary with_types_in guest::bindings);
}
