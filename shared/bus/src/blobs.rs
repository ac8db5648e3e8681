//! Content-addressed blobs (contribution content, later weights, indexes and reports) in
//! JetStream object store buckets. A blob's name is the hex SHA-256 of its bytes, so storing
//! the same content twice stores it once, and a reader checks what it got against its name.

use async_nats::jetstream::object_store::{self, ObjectStore};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::{Bus, Error};

/// One object store bucket of the namespace: `<root>_<name>`.
#[derive(Clone)]
pub struct BlobStore {
    store: ObjectStore,
    /// The bucket's backing stream (`OBJ_<bucket>`), read with direct gets.
    stream: async_nats::jetstream::stream::Stream,
    bucket: String,
}

/// What [`BlobStore::put`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub sha256: String,
    pub size_bytes: u64,
    pub bucket: String,
    /// False when the bucket held these bytes already.
    pub newly_stored: bool,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Bus {
    /// The bucket `name` of this namespace, created (file storage, the configured replicas) when
    /// it does not exist yet.
    pub async fn blob_store(&self, name: &str) -> Result<BlobStore, Error> {
        let bucket = format!("{}_{name}", self.namespace().root());
        let store = match self.jetstream().get_object_store(&bucket).await {
            Ok(store) => store,
            Err(_) => self
                .jetstream()
                .create_object_store(object_store::Config {
                    bucket: bucket.clone(),
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: self.replicas(),
                    ..Default::default()
                })
                .await
                .map_err(|error| Error::Stream { stream: bucket.clone(), reason: error.to_string() })?,
        };
        let stream = self
            .jetstream()
            .get_stream(format!("OBJ_{bucket}"))
            .await
            .map_err(|error| Error::Stream { stream: format!("OBJ_{bucket}"), reason: error.to_string() })?;
        Ok(BlobStore { store, stream, bucket })
    }
}

impl BlobStore {
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Stores `bytes` under their SHA-256 unless the bucket has them already.
    pub async fn put(&self, bytes: &[u8]) -> Result<StoredBlob, Error> {
        let sha256 = sha256_hex(bytes);
        let size_bytes = bytes.len() as u64;
        let present = match self.store.info(&sha256).await {
            Ok(info) => !info.deleted && info.size as u64 == size_bytes,
            Err(error) if matches!(error.kind(), object_store::InfoErrorKind::NotFound) => false,
            Err(error) => return Err(Error::nats(error)),
        };
        if !present {
            let mut reader = bytes;
            self.store.put(sha256.as_str(), &mut reader).await.map_err(Error::nats)?;
        }
        Ok(StoredBlob { sha256, size_bytes, bucket: self.bucket.clone(), newly_stored: !present })
    }

    /// The bytes stored under `sha256`, checked against it. `Ok(None)` when there is no such blob.
    /// The blob's bytes, or `None` when absent.
    ///
    /// Read chunk by chunk with direct gets rather than through `ObjectStore::get`, which
    /// creates a consumer per read: under load (the validator reads every contribution) those
    /// consumers piled up until the server refused new ones ("maximum consumers limit reached"),
    /// and each cost two extra round trips besides.
    pub async fn get(&self, sha256: &str) -> Result<Option<Bytes>, Error> {
        let info = match self.store.info(sha256).await {
            Ok(info) if !info.deleted => info,
            Ok(_) => return Ok(None),
            Err(error) if matches!(error.kind(), object_store::InfoErrorKind::NotFound) => return Ok(None),
            Err(error) => return Err(Error::nats(error)),
        };
        let subject = format!("$O.{}.C.{}", self.bucket, info.nuid);
        let mut bytes = Vec::with_capacity(info.size);
        let mut next = 1;
        for _ in 0..info.chunks {
            let chunk = self.stream.direct_get_next_for_subject(subject.as_str(), Some(next)).await.map_err(Error::nats)?;
            bytes.extend_from_slice(&chunk.payload);
            next = chunk.sequence + 1;
        }
        if sha256_hex(&bytes) != sha256 {
            return Err(Error::Nats(format!("blob {sha256} in {} does not match its name", self.bucket)));
        }
        Ok(Some(bytes.into()))
    }
}
