//! The S3-compatible backend of [`crate::backend::Store`], through the
//! `object_store` crate (docs/decisions.md, "Object storage (issue 20),
//! step 1").
//!
//! A repository root `s3://BUCKET/PREFIX` maps `ROOT/packs/ab/<name>.pack`
//! to the object `PREFIX/packs/ab/<name>.pack` of `BUCKET`. Endpoint,
//! region and credentials come from the environment as the AWS tools read
//! them (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP=true` for a plain-HTTP
//! endpoint); requests use path-style addressing, which self-hosted stores
//! expect.
//!
//! # Guarantees
//!
//! - The repository stays synchronous: every request runs on this
//!   backend's own tokio runtime (two threads, created with the first
//!   store) and the calling thread waits for its answer, so callers inside
//!   another runtime (the server) block a thread but never panic.
//! - A file is written with one PUT of its whole content, so no reader
//!   sees it half written; `put_new` sends `If-None-Match: *`. A pack
//!   larger than a part (`REWIND_S3_PART_SIZE`, 16 MiB) is uploaded in
//!   parts, which the store makes into the object, whole, only when the
//!   upload completes; an upload that fails is aborted, so the store keeps
//!   none of its parts.
//! - Transient failures (5xx, timeouts, throttling) are retried with
//!   backoff by `object_store`'s client (10 retries within 3 minutes by
//!   default) before an error reaches the repository; one request may take
//!   up to 300 s (a whole pack over a slow uplink). `REWIND_S3_RETRIES`,
//!   `REWIND_S3_RETRY_SECS`, `REWIND_S3_TIMEOUT_SECS` and
//!   `REWIND_S3_CONNECT_TIMEOUT_SECS` change them (`s3_config.rs`).
//! - Error messages name the object (`s3://BUCKET/KEY`) and what the store
//!   answered; credentials are sent only as request signatures and never
//!   appear in them.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{
    ClientConfigKey, ObjectStore, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion,
};
use rewind_core::RepoError;

use crate::backend::{Blob, Leasing, Listed, PutIf, ReadAt, Store, Written};
use crate::durable::{Steps, failpoint, io_err};
use crate::s3_config::ClientSettings;
use crate::staging::Staging;

/// One bucket's client.
pub(crate) struct S3Store {
    /// `s3://BUCKET`, what every path of this store starts with.
    root: String,
    client: Arc<dyn ObjectStore>,
    rt: &'static tokio::runtime::Runtime,
    /// This process's directory for the pack being filled.
    staging: OnceLock<Staging>,
    /// The requests sent so far, by kind.
    pub(crate) requests: Arc<Requests>,
    /// Packs larger than this many bytes are uploaded in parts of this
    /// size (`REWIND_S3_PART_SIZE`; tests change it).
    pub(crate) part_size: AtomicU64,
}

/// Requests sent to one bucket, by kind: what tests and measurements count
/// (docs/decisions.md, "Object storage: index cache and requests").
#[derive(Debug, Default)]
pub(crate) struct Requests {
    /// HEAD: the length of one object.
    pub head: AtomicU64,
    /// GET of a whole object.
    pub get: AtomicU64,
    /// GET of a byte range.
    pub range: AtomicU64,
    /// LIST of one prefix (object_store follows the pages of a long
    /// listing by itself: counted once).
    pub list: AtomicU64,
    /// PUT (whole objects, conditional or not).
    pub put: AtomicU64,
    /// Multipart uploads begun.
    pub multipart: AtomicU64,
    /// Parts uploaded.
    pub part: AtomicU64,
    /// Multipart uploads aborted.
    pub abort: AtomicU64,
    /// DELETE.
    pub delete: AtomicU64,
}

/// A copy of [`Requests`] at one moment.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub head: u64,
    pub get: u64,
    pub range: u64,
    pub list: u64,
    pub put: u64,
    pub multipart: u64,
    pub part: u64,
    pub abort: u64,
    pub delete: u64,
}

#[cfg(test)]
impl Requests {
    /// The counts now.
    pub(crate) fn now(&self) -> Counts {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            head: n(&self.head),
            get: n(&self.get),
            range: n(&self.range),
            list: n(&self.list),
            put: n(&self.put),
            multipart: n(&self.multipart),
            part: n(&self.part),
            abort: n(&self.abort),
            delete: n(&self.delete),
        }
    }
}

#[cfg(test)]
impl Counts {
    /// The requests counted since `before`.
    pub(crate) fn since(self, before: Counts) -> Counts {
        Counts {
            head: self.head - before.head,
            get: self.get - before.get,
            range: self.range - before.range,
            list: self.list - before.list,
            put: self.put - before.put,
            multipart: self.multipart - before.multipart,
            part: self.part - before.part,
            abort: self.abort - before.abort,
            delete: self.delete - before.delete,
        }
    }
}

/// Count one request of a kind.
fn count(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// The clients made so far, by `s3://BUCKET`: made once per process (the
/// environment they are configured from does not change), never dropped.
static STORES: Mutex<Option<HashMap<String, &'static S3Store>>> = Mutex::new(None);

/// The store that holds `path` (`s3://BUCKET/…`), made on first use.
pub(crate) fn store_for(path: &Path) -> io::Result<&'static S3Store> {
    let s = path
        .to_str()
        .ok_or_else(|| bad_url("the URL is not UTF-8"))?;
    let rest = s
        .strip_prefix("s3://")
        .ok_or_else(|| bad_url("it does not start with s3://"))?;
    let bucket = rest.split('/').next().unwrap_or("");
    if bucket.is_empty() {
        return Err(bad_url("no bucket (write s3://BUCKET/PREFIX)"));
    }
    let mut stores = STORES.lock().unwrap_or_else(|p| p.into_inner());
    let stores = stores.get_or_insert_with(HashMap::new);
    let root = format!("s3://{bucket}");
    if let Some(s) = stores.get(&root) {
        return Ok(s);
    }
    let store: &'static S3Store = Box::leak(Box::new(S3Store::from_env(bucket, root.clone())?));
    stores.insert(root, store);
    Ok(store)
}

fn bad_url(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not an object store URL: {why}"),
    )
}

/// The runtime every store's requests run on.
fn runtime() -> io::Result<&'static tokio::runtime::Runtime> {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RT.get() {
        return Ok(rt);
    }
    // Two threads: requests come from one repository thread at a time
    // (the writer, or a reader); the second keeps connections serviced.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rewind-s3")
        .enable_all()
        .build()?;
    Ok(RT.get_or_init(|| rt))
}

/// What a listing tells of the object `o`, found as `name` at `path`.
fn listed(path: PathBuf, name: &str, o: &object_store::ObjectMeta) -> Listed {
    Listed {
        name: name.to_string(),
        path,
        len: Some(o.size),
        // The ETag alone would do on a store that gives one; the time of
        // last change keeps a store without ETags honest.
        version: Some(format!(
            "{} {}",
            o.e_tag.as_deref().unwrap_or("-"),
            o.last_modified.timestamp_nanos_opt().unwrap_or(0)
        )),
    }
}

/// Run `f` on `rt` and wait for its answer.
fn run<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = object_store::Result<T>> + Send + 'static,
) -> io::Result<T> {
    run_raw(rt, f)?.map_err(to_io)
}

/// The same, the store's answer as object_store gives it.
fn run_raw<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    f: impl Future<Output = object_store::Result<T>> + Send + 'static,
) -> io::Result<object_store::Result<T>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv()
        .map_err(|_| io::Error::other("the object store request was abandoned"))
}

/// Tries of a listing whose answer broke off while its body was read.
/// object_store retries a request that fails or is answered 5xx, and the
/// body of a GET from where it stopped, but not the body of a LIST answer
/// (0.12: `Error::ListResponseBody`): one connection dropped there failed
/// the whole command (found by tests/s3_faults.rs, whose proxy cuts
/// answers in the middle). A listing is a read, so trying it again is
/// harmless; three tries, 200 then 400 ms apart, outlast a dropped
/// connection without hiding a store that keeps failing.
const LIST_TRIES: u32 = 3;

impl S3Store {
    /// The answer of `list(client, prefix of dir)`, a listing request,
    /// sent again (up to [`LIST_TRIES`] times) when its answer broke off
    /// while its body was read.
    fn listing<T, F, Fut>(&self, dir: &Path, list: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: Fn(Arc<dyn ObjectStore>, Option<Key>) -> Fut,
        Fut: Future<Output = object_store::Result<T>> + Send + 'static,
    {
        let k = self.key(dir)?;
        let prefix = (!k.as_ref().is_empty()).then_some(k);
        let mut tries = 0;
        loop {
            tries += 1;
            count(&self.requests.list);
            match run_raw(self.rt, list(self.client.clone(), prefix.clone()))? {
                Err(e) if tries < LIST_TRIES && body_broke_off(&e) => {
                    tracing::info!(dir = %dir.display(), error = %e, "listing again");
                    std::thread::sleep(std::time::Duration::from_millis(100 << tries));
                }
                r => return r.map_err(to_io),
            }
        }
    }
}

/// Whether `e` is an answer whose body broke off (the request itself
/// succeeded). object_store names these errors "Error getting … response
/// body" and gives them no variant of their own.
fn body_broke_off(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. }) && e.to_string().contains("response body")
}

/// An `object_store` error as an `io::Error` whose kind callers match on.
fn to_io(e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => io::ErrorKind::AlreadyExists,
        object_store::Error::NotImplemented | object_store::Error::NotSupported { .. } => {
            io::ErrorKind::Unsupported
        }
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// `b` with the retry policy and timeouts of `s`.
fn configure(b: AmazonS3Builder, s: &ClientSettings) -> AmazonS3Builder {
    let mut b = b.with_retry(RetryConfig {
        max_retries: s.retries,
        retry_timeout: s.retry_timeout,
        ..RetryConfig::default()
    });
    let keys = [
        (ClientConfigKey::Timeout, s.timeout),
        (ClientConfigKey::ConnectTimeout, s.connect_timeout),
    ];
    for (key, value) in keys {
        if let Some(d) = value {
            b = b.with_config(
                AmazonS3ConfigKey::Client(key),
                format!("{}ms", d.as_millis()),
            );
        }
    }
    b
}

impl S3Store {
    fn from_env(bucket: &str, root: String) -> io::Result<S3Store> {
        let has = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
        // Without these, the client would look for instance credentials
        // (minutes of retries against an address that is not there).
        if !has("AWS_ACCESS_KEY_ID") || !has("AWS_SECRET_ACCESS_KEY") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no credentials for the object store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            ));
        }
        let settings = ClientSettings::from_env()?;
        let client = configure(AmazonS3Builder::from_env(), &settings)
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(S3Store {
            root,
            client: Arc::new(client),
            rt: runtime()?,
            staging: OnceLock::new(),
            requests: Arc::default(),
            part_size: AtomicU64::new(settings.part_size),
        })
    }

    /// A client for `bucket` at a plain-HTTP `endpoint`, configured
    /// without the environment (tests).
    #[cfg(test)]
    pub(crate) fn for_test(
        endpoint: &str,
        bucket: &str,
        key: &str,
        secret: &str,
    ) -> io::Result<S3Store> {
        let client = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(S3Store {
            root: format!("s3://{bucket}"),
            client: Arc::new(client),
            rt: runtime()?,
            staging: OnceLock::new(),
            requests: Arc::default(),
            part_size: AtomicU64::new(ClientSettings::from_vars(|_| None)?.part_size),
        })
    }

    /// Make `store` the one every path under its bucket uses (tests).
    #[cfg(test)]
    pub(crate) fn register(store: S3Store) -> &'static S3Store {
        let store: &'static S3Store = Box::leak(Box::new(store));
        let mut stores = STORES.lock().unwrap_or_else(|p| p.into_inner());
        stores
            .get_or_insert_with(HashMap::new)
            .insert(store.root.clone(), store);
        store
    }

    /// The object key of `path`: what follows `s3://BUCKET/`, empty
    /// segments dropped.
    fn key(&self, path: &Path) -> io::Result<Key> {
        let s = path
            .to_str()
            .and_then(|s| s.strip_prefix(&self.root))
            .ok_or_else(|| bad_url("a path outside the bucket"))?;
        let segments: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
        Key::parse(segments.join("/"))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }

    fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        run(self.rt, f)
    }

    fn get_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let (c, k) = (self.client.clone(), self.key(path)?);
        count(&self.requests.get);
        self.run(async move { c.get(&k).await?.bytes().await })
            .map(|b| b.to_vec())
    }

    fn put_bytes(&self, path: &Path, bytes: Vec<u8>, mode: PutMode) -> io::Result<()> {
        let (c, k) = (self.client.clone(), self.key(path)?);
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        count(&self.requests.put);
        self.run(async move { c.put_opts(&k, PutPayload::from(bytes), opts).await })
            .map(|_| ())
    }

    /// Upload the `len` bytes of local file `tmp` as object `dest` in
    /// parts of `part` bytes, one after the other (one part in memory at a
    /// time). Any failure aborts the upload, so the store keeps no parts;
    /// the object appears only when the upload completes, whole.
    fn put_parts(&self, tmp: &Path, dest: &Path, len: u64, part: u64) -> io::Result<()> {
        let (c, k) = (self.client.clone(), self.key(dest)?);
        let file = std::fs::File::open(tmp)?;
        count(&self.requests.multipart);
        let mut upload = self.run(async move { c.put_multipart(&k).await })?;
        let mut sent = Ok(());
        let mut at = 0u64;
        while at < len && sent.is_ok() {
            let n = part.min(len - at);
            let mut buf = vec![0u8; n as usize];
            sent = (if at > 0 { failpoint("s3.part") } else { Ok(()) })
                .and_then(|()| ReadAt::read_exact_at(&file, &mut buf, at))
                .and_then(|()| {
                    count(&self.requests.part);
                    self.run(upload.put_part(PutPayload::from(buf)))
                });
            at += n;
        }
        let completing = sent.is_ok();
        let (mut upload, done) = match sent {
            Ok(()) => {
                let (upload, r) = self.run(async move {
                    let r = upload.complete().await;
                    Ok((upload, r))
                })?;
                // Tests: the store completed the upload, its answer was
                // lost on the way back.
                let r = r.map(|_| ()).map_err(to_io);
                (upload, r.and_then(|()| failpoint("s3.complete")))
            }
            Err(e) => (upload, Err(e)),
        };
        let Err(e) = done else {
            return Ok(());
        };
        // A completion whose answer was lost (the connection dropped, or
        // object_store's retry of it found the upload already completed)
        // may have made the object whole. Then the upload succeeded: an
        // error here would make the writer send the same records again in
        // another pack, stored twice (found by tests/s3_faults.rs). Pack
        // names are unique, so an object of this name and length is ours.
        if completing && matches!(Store::len(self, dest), Ok(n) if n == len) {
            tracing::info!(object = %dest.display(), error = %e, "the multipart upload completed although its answer was lost");
            return Ok(());
        }
        // Aborting an upload that did complete is refused, harmlessly.
        count(&self.requests.abort);
        if let Err(a) = self.run(async move { upload.abort().await }) {
            tracing::warn!(object = %dest.display(), error = %a, "could not abort a failed multipart upload; the store may keep its parts until its lifecycle rules remove them");
        }
        Err(e)
    }
}

/// Ranges of one object less than this far apart are fetched by one
/// request. object_store's default (1 MiB) made a restore read a fifth
/// more than the repository holds: the gaps between the chunks of one
/// batch of small files are mostly other files' chunks, read again by
/// their own requests.
const COALESCE_GAP: u64 = 128 << 10;

/// An object opened for ranged reads.
struct Object {
    client: Arc<dyn ObjectStore>,
    rt: &'static tokio::runtime::Runtime,
    key: Key,
    requests: Arc<Requests>,
}

impl ReadAt for Object {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        let (c, k) = (self.client.clone(), self.key.clone());
        count(&self.requests.range);
        let got = run(self.rt, async move { c.get_range(&k, offset..end).await })?;
        if got.len() != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} bytes where {} were asked for", got.len(), buf.len()),
            ));
        }
        buf.copy_from_slice(&got);
        Ok(())
    }

    fn read_ranges(&self, ranges: &[Range<u64>]) -> io::Result<Vec<bytes::Bytes>> {
        // object_store's helper: ranges less than 1 MiB apart are fetched
        // as one (a request costs more than reading that much more), and
        // up to 10 requests are under way at once.
        let (c, k, counter) = (self.client.clone(), self.key.clone(), self.requests.clone());
        let want = ranges.to_vec();
        let got = run(self.rt, async move {
            let fetch = |r: Range<u64>| {
                let (c, k) = (c.clone(), k.clone());
                count(&counter.range);
                async move { c.get_range(&k, r).await }
            };
            object_store::coalesce_ranges(&want, fetch, COALESCE_GAP).await
        })?;
        if got.len() != ranges.len() {
            return Err(io::Error::other(
                "the store answered a different number of ranges",
            ));
        }
        ranges
            .iter()
            .zip(got)
            .map(|(r, b)| {
                if b.len() as u64 == r.end - r.start {
                    Ok(b)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{} bytes where {} were asked for", b.len(), r.end - r.start),
                    ))
                }
            })
            .collect()
    }
}

impl Store for S3Store {
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.get_all(path)?)))
    }

    fn open_blob(&self, path: &Path) -> io::Result<Blob> {
        let len = self.len(path)?;
        self.open_blob_len(path, len)
    }

    fn open_blob_len(&self, path: &Path, len: u64) -> io::Result<Blob> {
        Ok(Blob {
            data: Arc::new(Object {
                client: self.client.clone(),
                rt: self.rt,
                key: self.key(path)?,
                requests: self.requests.clone(),
            }),
            len,
        })
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        let (c, k) = (self.client.clone(), self.key(path)?);
        count(&self.requests.head);
        self.run(async move { c.head(&k).await }).map(|m| m.size)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match self.len(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
        Ok(self
            .list_meta(dir)?
            .into_iter()
            .map(|l| (l.name, l.path))
            .collect())
    }

    fn list_meta(&self, dir: &Path) -> io::Result<Vec<Listed>> {
        let r = self.listing(dir, |c, prefix| async move {
            c.list_with_delimiter(prefix.as_ref()).await
        })?;
        let named = |p: &Key| {
            p.filename().map(|n| Listed {
                name: n.to_string(),
                path: dir.join(n),
                len: None,
                version: None,
            })
        };
        let prefixes = r.common_prefixes.iter().filter_map(named);
        let objects = r
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(|n| listed(dir.join(n), n, o)));
        Ok(prefixes.chain(objects).collect())
    }

    fn list_nested(
        &self,
        dir: &Path,
        keep_sub: &dyn Fn(&str) -> bool,
    ) -> io::Result<Vec<(String, Listed)>> {
        use futures::TryStreamExt;
        let k = self.key(dir)?;
        let all: Vec<object_store::ObjectMeta> = self.listing(dir, |c, prefix| async move {
            c.list(prefix.as_ref()).try_collect().await
        })?;
        let mut out = Vec::new();
        for o in &all {
            let Some(parts) = o.location.prefix_match(&k) else {
                continue;
            };
            let parts: Vec<_> = parts.collect();
            if let [sub, name] = &parts[..] {
                let (sub, name) = (sub.as_ref(), name.as_ref());
                if keep_sub(sub) {
                    out.push((sub.to_string(), listed(dir.join(sub).join(name), name, o)));
                }
            }
        }
        Ok(out)
    }

    fn put(
        &self,
        _tmp_dir: &Path,
        dest: &Path,
        bytes: &[u8],
        steps: &Steps,
    ) -> Result<(), RepoError> {
        failpoint(steps.write)
            .and_then(|()| self.put_bytes(dest, bytes.to_vec(), PutMode::Overwrite))
            .map_err(io_err(dest))
    }

    fn put_new(&self, dest: &Path, bytes: &[u8]) -> Result<bool, RepoError> {
        match self.put_bytes(dest, bytes.to_vec(), PutMode::Create) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err(dest)(e)),
        }
    }

    fn publish(&self, tmp: &Path, dest: &Path, steps: &Steps) -> Result<(), RepoError> {
        // Read back from the fsynced file: what is uploaded is what the
        // writer checked. A pack larger than a part goes in parts.
        let len = std::fs::metadata(tmp).map_err(io_err(tmp))?.len();
        let part = self.part_size.load(Ordering::Relaxed).max(1);
        failpoint(steps.rename).map_err(io_err(dest))?;
        if len > part {
            self.put_parts(tmp, dest, len, part).map_err(io_err(dest))?;
        } else {
            let bytes = std::fs::read(tmp).map_err(io_err(tmp))?;
            self.put_bytes(dest, bytes, PutMode::Overwrite)
                .map_err(io_err(dest))?;
        }
        let _ = std::fs::remove_file(tmp);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let (c, k) = (self.client.clone(), self.key(path)?);
        count(&self.requests.delete);
        self.run(async move { c.delete(&k).await })
    }

    fn sync_dir(&self, _dir: &Path) -> Result<(), RepoError> {
        // A store's writes are durable once acknowledged.
        Ok(())
    }

    fn ensure_dir(&self, _dir: &Path) -> Result<(), RepoError> {
        // Keys need no directories.
        Ok(())
    }

    fn staging(&self, _root: &Path) -> io::Result<PathBuf> {
        if let Some(s) = self.staging.get() {
            return Ok(s.dir.clone());
        }
        let s = Staging::create(&std::env::temp_dir())?;
        Ok(self.staging.get_or_init(|| s).dir.clone())
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn leasing(&'static self) -> Option<&'static dyn Leasing> {
        Some(self)
    }
}

impl Leasing for S3Store {
    fn get_tagged(&self, path: &Path) -> io::Result<Option<(Vec<u8>, Option<String>)>> {
        let (c, k) = (self.client.clone(), self.key(path)?);
        count(&self.requests.get);
        let got = self.run(async move {
            match c.get(&k).await {
                Ok(r) => {
                    let tag = r.meta.e_tag.clone();
                    Ok(Some((r.bytes().await?.to_vec(), tag)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        Ok(got)
    }

    fn put_if(&self, path: &Path, bytes: Vec<u8>, cond: PutIf) -> io::Result<Written> {
        let (c, k) = (self.client.clone(), self.key(path)?);
        let mode = match cond {
            PutIf::Always => PutMode::Overwrite,
            PutIf::Absent => PutMode::Create,
            PutIf::Matches(tag) => PutMode::Update(UpdateVersion {
                e_tag: Some(tag),
                version: None,
            }),
        };
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        count(&self.requests.put);
        self.run(async move {
            match c.put_opts(&k, PutPayload::from(bytes), opts).await {
                Ok(r) => Ok(Written::Yes(r.e_tag)),
                // `Create` refused arrives as `AlreadyExists`, `Update`
                // refused as `Precondition` (a missing object too).
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => Ok(Written::Refused),
                Err(e) => Err(e),
            }
        })
    }

    fn delete(&self, path: &Path) -> io::Result<()> {
        match Store::remove(self, path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(msg: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: msg.into(),
        }
    }

    #[test]
    fn only_an_answer_whose_body_broke_off_is_listed_again() {
        assert!(body_broke_off(&generic(
            "Error getting list response body: HTTP error: request or response body error"
        )));
        assert!(!body_broke_off(&generic(
            "Error performing list request: Server returned non-2xx status code: 403 Forbidden"
        )));
        assert!(!body_broke_off(&object_store::Error::NotFound {
            path: "x".into(),
            source: "response body".into(),
        }));
    }
}
