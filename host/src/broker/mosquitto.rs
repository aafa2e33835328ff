//! Starts and stops a real mosquitto broker on a free loopback port with
//! mutual TLS, for the embedded default broker and for tests.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The command that installs mosquitto on Debian and Ubuntu.
pub const INSTALL_HINT: &str = "apt-get update && apt-get install -y mosquitto mosquitto-clients";

/// Why a broker could not be started.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The binary is not installed.
    #[error("mosquitto is not installed (install it: {INSTALL_HINT})")]
    NotInstalled,
    /// Writing the configuration or spawning failed.
    #[error("cannot start mosquitto")]
    Io(#[from] std::io::Error),
    /// Another process bound the port first.
    #[error("mosquitto could not listen on 127.0.0.1:{port}: the port is taken")]
    PortTaken {
        /// The port it was told to use.
        port: u16,
    },
    /// It exited or never listened.
    #[error("mosquitto did not start listening on 127.0.0.1:{port}: {log}")]
    NotListening {
        /// The port it was told to use.
        port: u16,
        /// What it printed.
        log: String,
    },
}

/// TLS settings of a broker listener.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// CA that client certificates must chain to.
    pub cafile: PathBuf,
    /// The broker's certificate.
    pub certfile: PathBuf,
    /// The broker's key.
    pub keyfile: PathBuf,
    /// Refuse clients without a valid certificate.
    pub require_certificate: bool,
    /// Restrict to one TLS version (`tlsv1.2`, `tlsv1.3`, ...); `None` = mosquitto's default.
    pub tls_version: Option<String>,
}

/// A running mosquitto process; killed on drop.
pub struct Mosquitto {
    child: Child,
    /// Port it listens on, on 127.0.0.1.
    pub port: u16,
    config: PathBuf,
    log: PathBuf,
}

/// Path of the mosquitto binary (Debian puts it in /usr/sbin).
pub fn binary() -> Option<PathBuf> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Makes the child get SIGKILL when the thread that spawned it ends (the
/// host's main thread, for the embedded broker), so a host killed outright
/// leaves no broker behind; and puts it in a process group of its own, so
/// a Ctrl-C at the terminal stops the host (which then stops the broker)
/// and not the broker under the host's last iteration.
#[allow(
    unsafe_code,
    reason = "pre_exec runs between fork and exec; prctl and getppid are async-signal-safe"
)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    let parent = std::process::id();
    // SAFETY: the closure only makes async-signal-safe system calls and
    // allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other(
                    "the host exited while starting mosquitto",
                ));
            }
            Ok(())
        });
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

impl Mosquitto {
    /// Starts mosquitto with `tls` on a free loopback port, writing its
    /// configuration and log into `dir`, and waits until it accepts TCP.
    /// Sessions live in memory only (see [`Mosquitto::start_on`]).
    pub fn start(dir: &Path, tls: &ListenerTls) -> Result<Self, BrokerError> {
        // The port is free when chosen but may be taken before mosquitto
        // binds it (by another process choosing a port at the same time):
        // then choose again.
        let mut attempt = 0;
        loop {
            match Self::start_on(dir, tls, free_port()?, false) {
                Err(BrokerError::PortTaken { .. }) if attempt < 5 => attempt += 1,
                other => return other,
            }
        }
    }

    /// Like [`Mosquitto::start`] on a given port; `persistence` keeps
    /// sessions and queued messages across restarts (in `dir`).
    pub fn start_on(
        dir: &Path,
        tls: &ListenerTls,
        port: u16,
        persistence: bool,
    ) -> Result<Self, BrokerError> {
        let binary = binary().ok_or(BrokerError::NotInstalled)?;
        let config = dir.join(format!("mosquitto-{port}.conf"));
        let log = dir.join(format!("mosquitto-{port}.log"));
        let mut conf = format!(
            "listener {port} 127.0.0.1\n\
             cafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate {}\nallow_anonymous true\n\
             persistence {persistence}\npersistence_location {}/\n\
             log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             max_queued_messages 10000\nset_tcp_nodelay true\n",
            // set_tcp_nodelay: without it, CONNACK waits ~40 ms behind the TLS 1.3
            // session tickets (Nagle against the client's delayed ACK).
            tls.cafile.display(),
            tls.certfile.display(),
            tls.keyfile.display(),
            tls.require_certificate,
            dir.display(),
        );
        if persistence {
            // Save after every change, so a broker killed with SIGKILL comes
            // back with the sessions and messages it had acknowledged.
            conf.push_str("autosave_interval 1\nautosave_on_changes true\n");
        }
        if let Some(v) = &tls.tls_version {
            conf.push_str(&format!("tls_version {v}\n"));
        }
        if running_as_root() {
            // Otherwise mosquitto drops to user `mosquitto`, who cannot read
            // keys in a private temporary directory.
            conf.push_str("user root\n");
        }
        std::fs::write(&config, conf)?;
        let mut command = Command::new(binary);
        // The broker has no use for the host's settings, some of them
        // secret (the token PIN).
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with(crate::ENV_PREFIX) {
                command.env_remove(name);
            }
        }
        command
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        die_with_parent(&mut command);
        let child = command.spawn()?;
        let mut broker = Self {
            child,
            port,
            config,
            log,
        };
        broker.wait_listening()?;
        Ok(broker)
    }

    /// Waits until this mosquitto (not some other process that holds the
    /// port) says it runs with its listener open, and the port accepts TCP.
    fn wait_listening(&mut self) -> Result<(), BrokerError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let opened = format!("listen socket on port {}.", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            let log = self.log_text();
            if log.contains(&opened)
                && log.contains(" running")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log_text();
        if log.contains("Address already in use") {
            return Err(BrokerError::PortTaken { port: self.port });
        }
        Err(BrokerError::NotListening {
            port: self.port,
            log: log.replace('\n', " | "),
        })
    }

    /// What the broker logged so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The configuration file in use.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the broker as an operator would (SIGTERM: it saves its
    /// persistent sessions and queued messages), and waits until it has.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// Kills the broker at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}
