//! `wasi:keyvalue` (0.2.0-draft2: `store`, `atomics`, `batch`) on a
//! device's [`StateCtx`]: the WIT's `error` is [`StateError`] as
//! `other(...)`, handles live in the context's table. The real host and the
//! mock host link these same implementations.

use wasmtime::component::Resource;

use super::{atomics_bindings as atomics, batch_bindings as batch, store_bindings as store};
use crate::state::ctx::{BUCKET_NAMES, Bucket, Cas, StateCtx};
use crate::state::{Applied, Op, StateError};

pub use store::Error;

/// Adds the three interfaces to `linker`, each reached through `get`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> &mut StateCtx,
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    store::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    atomics::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    batch::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)?;
    Ok(())
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

impl batch::Host for StateCtx {
    async fn get_many(
        &mut self,
        _: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Answer<Vec<Option<(String, Vec<u8>)>>> {
        answer(
            keys.into_iter()
                .map(|k| Ok(self.read(&k)?.map(|v| (k, v))))
                .collect(),
        )
    }

    async fn set_many(
        &mut self,
        _: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Answer<()> {
        let ops = key_values.into_iter().map(|(k, v)| Op::Set(k, v)).collect();
        answer(self.write(ops).await.map(drop))
    }

    async fn delete_many(&mut self, _: Resource<Bucket>, keys: Vec<String>) -> Answer<()> {
        let ops = keys.into_iter().map(Op::Delete).collect();
        answer(self.write(ops).await.map(drop))
    }
}
