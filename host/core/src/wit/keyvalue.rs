//! `wasi:keyvalue` (0.2.0-draft2: `store`, `atomics`, `batch`) on a
//! device's [`StateCtx`]: the WIT's `error` is [`StateError`] as
//! `other(...)`, handles live in the context's table. The real host and the
//! mock host link these same implementations.
//!
//! `batch` is linked by hand: its lists are read from the guest's memory
//! one element at a time, after their length is checked, because a list
//! whose elements all point at one large string would otherwise be copied
//! whole, once per element, before any check could run.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, WasmList, WasmStr};

use super::{atomics_bindings as atomics, store_bindings as store};
use crate::state::ctx::{BUCKET_NAMES, Bucket, Cas, MAX_BATCH, StateCtx};
use crate::state::{Applied, Op, StateError};

pub use store::Error;

/// Adds the three interfaces to `linker`, each reached through `get`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut StateCtx,
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    store::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    atomics::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    add_batch(linker, get)
}

/// The `batch` interface's name in the world.
const BATCH: &str = "wasi:keyvalue/batch@0.2.0-draft2";

type Pairs = WasmList<(WasmStr, WasmList<u8>)>;

/// Links `batch`, each list read element by element within its limits.
fn add_batch<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut StateCtx,
) -> wasmtime::Result<()> {
    let mut batch = linker.instance(BATCH)?;
    batch.func_wrap_async(
        "get-many",
        move |mut store: StoreContextMut<'_, T>,
              (bucket, keys): (Resource<Bucket>, WasmList<WasmStr>)| {
            Box::new(async move {
                let keys = match lift_keys(&mut store, &keys, get) {
                    Ok(keys) => keys,
                    Err(e) => return Ok((Err(e.into()),)),
                };
                let ctx = get(store.data_mut());
                ctx.table.get(&bucket)?;
                let found: Result<Vec<_>, StateError> = keys
                    .into_iter()
                    .map(|k| Ok(ctx.read(&k)?.map(|v| (k, v))))
                    .collect();
                Ok((found.map_err(Error::from),))
            })
        },
    )?;
    batch.func_wrap_async(
        "set-many",
        move |mut store: StoreContextMut<'_, T>, (bucket, pairs): (Resource<Bucket>, Pairs)| {
            Box::new(async move {
                let ops = match lift_pairs(&mut store, &pairs, get) {
                    Ok(ops) => ops,
                    Err(e) => return Ok((Err(Error::from(e)),)),
                };
                let ctx = get(store.data_mut());
                ctx.table.get(&bucket)?;
                Ok((ctx.write(ops).await.map(drop).map_err(Error::from),))
            })
        },
    )?;
    batch.func_wrap_async(
        "delete-many",
        move |mut store: StoreContextMut<'_, T>,
              (bucket, keys): (Resource<Bucket>, WasmList<WasmStr>)| {
            Box::new(async move {
                let keys = match lift_keys(&mut store, &keys, get) {
                    Ok(keys) => keys,
                    Err(e) => return Ok((Err(Error::from(e)),)),
                };
                let ctx = get(store.data_mut());
                ctx.table.get(&bucket)?;
                let ops = keys.into_iter().map(Op::Delete).collect();
                Ok((ctx.write(ops).await.map(drop).map_err(Error::from),))
            })
        },
    )?;
    Ok(())
}

/// A batch's keys, each checked as it is read; a list the canonical ABI
/// cannot read (bad UTF-8, say) is the logic's error too.
fn lift_keys<T: 'static>(
    store: &mut StoreContextMut<'_, T>,
    list: &WasmList<WasmStr>,
    get: fn(&mut T) -> &mut StateCtx,
) -> Result<Vec<String>, StateError> {
    if list.len() > MAX_BATCH {
        return Err(StateError::BatchTooLarge(list.len()));
    }
    let strs: Vec<WasmStr> = lifted(list.iter(&mut *store).and_then(Iterator::collect))?;
    let quota = get(store.data_mut()).quota();
    let mut keys = Vec::with_capacity(strs.len());
    for s in strs {
        let key = lifted(s.to_str(&*store))?;
        quota.check_key(&key)?;
        keys.push(key.into_owned());
    }
    Ok(keys)
}

/// A batch's pairs, each checked as it is read.
fn lift_pairs<T: 'static>(
    store: &mut StoreContextMut<'_, T>,
    list: &Pairs,
    get: fn(&mut T) -> &mut StateCtx,
) -> Result<Vec<Op>, StateError> {
    if list.len() > MAX_BATCH {
        return Err(StateError::BatchTooLarge(list.len()));
    }
    let pairs: Vec<(WasmStr, WasmList<u8>)> =
        lifted(list.iter(&mut *store).and_then(Iterator::collect))?;
    let quota = get(store.data_mut()).quota();
    let mut ops = Vec::with_capacity(pairs.len());
    for (k, v) in pairs {
        let key = lifted(k.to_str(&*store))?;
        quota.check_key(&key)?;
        if v.len() > quota.max_value_bytes as usize {
            return Err(crate::state::QuotaError::Value {
                key: key.into_owned(),
                len: v.len(),
                max: quota.max_value_bytes,
            }
            .into());
        }
        let value = v.as_le_slice(&*store).to_vec();
        ops.push(Op::Set(key.into_owned(), value));
    }
    Ok(ops)
}

/// A value the canonical ABI could not read, as the logic's error.
fn lifted<V>(r: wasmtime::Result<V>) -> Result<V, StateError> {
    r.map_err(|e| StateError::Malformed(e.to_string()))
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Error::Other(e.to_string())
    }
}

type Answer<T> = wasmtime::Result<Result<T, Error>>;

fn answer<T>(r: Result<T, StateError>) -> Answer<T> {
    Ok(r.map_err(Error::from))
}

impl StateCtx {
    /// One op, its result.
    async fn one(&mut self, op: Op) -> Result<Applied, StateError> {
        let mut applied = self.write(vec![op]).await?;
        Ok(applied.pop().unwrap_or(Applied::Written))
    }

    fn push<R: Send + 'static>(&mut self, handle: R) -> Answer<Resource<R>> {
        Ok(self
            .table
            .push(handle)
            .map_err(|_| Error::Other("too many open handles; drop some first".into())))
    }
}

impl store::Host for StateCtx {
    async fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
        if !BUCKET_NAMES.contains(&identifier.as_str()) {
            return Ok(Err(Error::NoSuchStore));
        }
        self.push(Bucket)
    }
}

impl store::HostBucket for StateCtx {
    async fn get(&mut self, _: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
        answer(self.read(&key))
    }

    async fn set(&mut self, _: Resource<Bucket>, key: String, value: Vec<u8>) -> Answer<()> {
        answer(self.one(Op::Set(key, value)).await.map(drop))
    }

    async fn delete(&mut self, _: Resource<Bucket>, key: String) -> Answer<()> {
        answer(self.one(Op::Delete(key)).await.map(drop))
    }

    async fn exists(&mut self, _: Resource<Bucket>, key: String) -> Answer<bool> {
        answer(self.read(&key).map(|v| v.is_some()))
    }

    async fn list_keys(
        &mut self,
        _: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Answer<store::KeyResponse> {
        answer(
            self.list(cursor.as_deref())
                .map(|(keys, cursor)| store::KeyResponse { keys, cursor }),
        )
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for StateCtx {
    async fn increment(&mut self, _: Resource<Bucket>, key: String, delta: i64) -> Answer<i64> {
        answer(
            self.one(Op::Increment(key, delta))
                .await
                .map(|applied| match applied {
                    Applied::Counter(n) => n,
                    _ => 0,
                }),
        )
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas { key, current } = self.table.delete(cas)?;
        let op = Op::Swap {
            key: key.clone(),
            expected: current,
            value,
        };
        Ok(match self.one(op).await {
            Ok(Applied::Stale(current)) => match self.push(Cas { key, current })? {
                Ok(cas) => Err(atomics::CasError::CasFailed(cas)),
                Err(e) => Err(atomics::CasError::StoreError(e)),
            },
            Ok(_) => Ok(()),
            Err(e) => Err(atomics::CasError::StoreError(e.into())),
        })
    }
}

impl atomics::HostCas for StateCtx {
    async fn new(&mut self, _: Resource<Bucket>, key: String) -> Answer<Resource<Cas>> {
        match self.read(&key) {
            Ok(current) => self.push(Cas { key, current }),
            Err(e) => answer(Err(e)),
        }
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Answer<Option<Vec<u8>>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}
