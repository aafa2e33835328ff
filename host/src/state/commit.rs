//! Group commit: one thread takes every device's writes, applies all that
//! wait in one write transaction, makes it durable with one commit (one
//! fsync), then answers each. Under load a commit holds many devices'
//! writes, so durability does not cost one fsync per write; alone, a write
//! waits for its own commit only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use host_core::state::{Applied, Op, Pending, Quota, StateError, Usage, plan};
use redb::{Database, Durability, ReadableTable};
use tokio::sync::oneshot;

use super::KV;

/// Most writes one commit takes.
const MAX_GROUP: usize = 4096;

/// One device's write waiting for a commit.
struct Request {
    device: Arc<str>,
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<Vec<Applied>, StateError>>,
}

/// The handle of the commit thread.
pub struct Writer {
    tx: mpsc::Sender<Request>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the commit thread on `db` (the file `path`), whose buckets
    /// hold `usage`.
    pub fn start(
        db: Arc<Database>,
        path: std::path::PathBuf,
        quota: Quota,
        usage: HashMap<String, Usage>,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        std::thread::Builder::new()
            .name("state-commit".into())
            .spawn(move || run(&db, &path, quota, usage, &rx, &counter))
            .expect("the state commit thread starts");
        Self { tx, commits }
    }

    /// Commits made so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Queues `ops` for `device`; the future ends once they are durable.
    pub fn write(&self, device: Arc<str>, ops: Vec<Op>) -> Pending {
        let (reply, answer) = oneshot::channel();
        let sent = self.tx.send(Request { device, ops, reply });
        Box::pin(async move {
            if sent.is_err() {
                return Err(stopped());
            }
            answer.await.unwrap_or_else(|_| Err(stopped()))
        })
    }
}

fn stopped() -> StateError {
    StateError::Storage("written: the host is stopping".into())
}

fn run(
    db: &Database,
    path: &std::path::Path,
    quota: Quota,
    mut usage: HashMap<String, Usage>,
    rx: &mpsc::Receiver<Request>,
    commits: &AtomicU64,
) {
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => group.push(r),
                Err(_) => break,
            }
        }
        match commit(db, &quota, &usage, &group) {
            Ok((answers, new_usage)) => {
                commits.fetch_add(1, Ordering::Relaxed);
                usage.extend(new_usage);
                for (request, answer) in group.into_iter().zip(answers) {
                    let _ = request.reply.send(answer);
                }
            }
            Err(e) => {
                // redb refuses every later write once its file failed one:
                // said once, with the way out.
                if !failed {
                    failed = true;
                    tracing::error!(
                        target: "host",
                        "the state database {} could not be written ({e}); the devices' state writes fail until the host restarts (free space on its disk or fix it, then restart the host)",
                        path.display()
                    );
                }
                for request in group {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

type Answers = Vec<Result<Vec<Applied>, StateError>>;

/// Applies `group` in one transaction: each request whole or (over its
/// quota) not at all; the commit makes all of them durable or none.
fn commit(
    db: &Database,
    quota: &Quota,
    usage: &HashMap<String, Usage>,
    group: &[Request],
) -> Result<(Answers, HashMap<String, Usage>), StateError> {
    let failed = |e: &dyn std::fmt::Display| StateError::Storage(format!("written: {e}"));
    let mut txn = db.begin_write().map_err(|e| failed(&e))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| failed(&e))?;
    let mut changed: HashMap<String, Usage> = HashMap::new();
    let mut answers = Vec::with_capacity(group.len());
    {
        let mut table = txn.open_table(KV).map_err(|e| failed(&e))?;
        for request in group {
            let device: &str = &request.device;
            let before = changed
                .get(device)
                .or_else(|| usage.get(device))
                .copied()
                .unwrap_or_default();
            let planned = plan(&request.ops, before, quota, |key| {
                table
                    .get((device, key))
                    .map(|v| v.map(|v| v.value().to_vec()))
                    .map_err(|e| StateError::Storage(format!("read: {e}")))
            });
            let planned = match planned {
                Ok(p) => p,
                Err(e) => {
                    answers.push(Err(e));
                    continue;
                }
            };
            for (key, value) in &planned.changes {
                match value {
                    Some(v) => table.insert((device, key.as_str()), v.as_slice()),
                    None => table.remove((device, key.as_str())).map(|_| None),
                }
                .map_err(|e| failed(&e))?;
            }
            changed.insert(device.to_string(), planned.usage);
            answers.push(Ok(planned.applied));
        }
    }
    txn.commit().map_err(|e| failed(&e))?;
    Ok((answers, changed))
}
