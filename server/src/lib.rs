//! rewind-server: the backup server desktops protect their files to. HTTPS
//! (TLS 1.3, HTTP/1.1 and HTTP/2) over the same repository engine as
//! rewind's embedded repository ([`rewind_repo`]), client enrollment and
//! authentication, and the administration of its data directory. The
//! `rewind-server` binary's command line is [`cli`] (the binary, built in
//! the `rewind` package beside `rewind`, only calls [`cli::main`]); the
//! verify and repair reports it prints, the same as `rewind verify` and
//! `repair` print, are [`verify`] and [`repair`].
//!
//! # Layout
//!
//! ```text
//! DATA/repo/            the repository (same format as an embedded one), unless:
//! DATA/store            the URL of the repository on an object store (`init --store
//!                       s3://BUCKET/PREFIX`; credentials come from the environment)
//! DATA/tls/cert.pem     self-signed certificate made by `init` (clients pin its fingerprint)
//! DATA/tls/key.pem      its private key
//! DATA/admin.hash       argon2 hash of the admin secret (guards /metrics)
//! DATA/clients.json     the client registry: names, argon2 hashes of tokens and keys,
//!                       retention policies (each client's, the server's default)
//! DATA/clients.lock     serialises changes to the registry between processes
//! DATA/owners/NAME.ids  the chunk ids each client has uploaded (32 bytes each)
//! ```
//!
//! # Guarantees
//!
//! - A client sees only its own data: another client's versions are not
//!   listed, its chunks are "missing" and cannot be read, and a commit may
//!   carry only the committing client's name and refer only to chunks it
//!   uploaded. `/v1/stats` gives a client its own figures only.
//! - Nor can a client learn by timing what another stored: the work of an
//!   upload and of the sync after it depends only on the uploading
//!   client's own list of chunks (a chunk it has not uploaded before is
//!   written to a pack whoever else stored it).
//! - Tokens, client keys and the admin secret are stored only as argon2id
//!   hashes. An enrollment token works once, and only until it expires
//!   ([`DEFAULT_EXPIRY`] unless `client add` is given another); a failed
//!   enrollment writes nothing.
//! - A refused credential costs one argon2 whatever name it gives: an
//!   unknown name is checked against a dummy hash, so the time of a
//!   refusal does not tell which names exist.
//! - A removed client's key stops working at once, without restarting a
//!   running server.
//! - Each failed attempt from an address (an IPv6 /64) doubles how long
//!   that address is refused (429 with `Retry-After`, before any other
//!   work), 100 ms up to 10 s; a success clears it. At most 65,536
//!   addresses are remembered, the one whose last failure is oldest
//!   forgotten first.
//! - At most 2 argon2 computations run at once, each in memory allocated
//!   once; a request that finds both busy gets 503 with `Retry-After` at
//!   once. A key that passed argon2 is recognised by its blake3 digest
//!   afterwards, so authenticated clients are served while strangers keep
//!   the slots busy.
//! - Credentials are checked before a request body is read; routes before
//!   authentication refuse a body over 4 KiB by its `Content-Length` and
//!   stop reading at the first byte over; bodies are bounded
//!   ([`rewind_core::wire::MAX_BODY`]) and decoded strictly, so bad input
//!   gets a 4xx status with a one-line reason and never makes a handler
//!   panic.
//! - Request bodies in memory stay within `max_body_memory` (each charged
//!   its length before it is read; one that does not fit gets 503 with
//!   `Retry-After` at once), and an HTTP/2 connection carries at most 16
//!   requests at once, so no client can make the server hold more.
//! - A chunk whose bytes do not hash to its id is refused, and nothing of
//!   the request that carried it is stored.
//! - A commit is answered only after its versions, the chunks they refer
//!   to and the client's list of its chunks are durable; sent again, it is
//!   recognised by `(client, seq)` and ignored.
//! - At most `max_connections` connections are served at once, and at
//!   most `max_connections_per_address` from one address (an IPv6 /64); a
//!   connection that finishes no TLS handshake in 10 s, or has no request
//!   in flight for `idle_timeout`, is closed (both at most the idle
//!   timeout). SIGTERM or SIGINT stops accepting, lets requests in flight
//!   finish for up to `grace`, and exits.
//! - Retention is the server's: each client's history is thinned by the
//!   policy the admin gave it (`client policy`), or the server's default
//!   (`policy`), by `serve` every `retention_every` or by `forget` and
//!   `prune` run by the admin; a client can pin (at most
//!   [`MAX_PINS`]) but its requests to forget,
//!   prune or unpin are refused (403), whatever it sends.
//! - One client's policy thins only its own versions; a chunk stays while
//!   a kept version of any client names it.
//! - Prune takes nothing a client relies on: packs sealed within the grace
//!   time are left alone, a chunk told present during a prune keeps its
//!   pack, and an unused pack is condemned (its chunks "missing", so they
//!   are sent again) before a later prune deletes it once the grace time
//!   has passed; a client's list of chunks may name a chunk pruned since,
//!   which is then "missing" to it, never "present".
//! - Only the owner can reach the data directory: directories are `0700`,
//!   files `0600`, and `serve` refuses a data directory other accounts can
//!   write to.
//! - With `init --store s3://BUCKET/PREFIX` the repository lives on the
//!   object store, under its writer lease (one `serve`, `forget`, `prune`
//!   or `repair` at a time, whichever host runs it); the certificate, the
//!   registry and the chunk lists stay in the data directory. No log line,
//!   status or error shows the store's credentials: they are only in the
//!   environment, and a URL holding some is refused by `init`.

//! # After a crash
//!
//! - A killed `serve` loses nothing it acknowledged: an interrupted batch
//!   is a partial pack in `DATA/repo/tmp`, deleted by the next `serve`, and
//!   the client, which got no answer, sends the batch again (see
//!   [`rewind_repo`], "After a crash").
//! - A client's chunk list may end in a torn id, which is ignored: the
//!   client is asked for that chunk again.
//! - The registry (with the retention policies), the certificate, its key
//!   and the admin hash are each replaced by rename, so a crash leaves the
//!   old file or the new one.
//! - A forget or prune cut short (by a crash, or SIGTERM while the
//!   retention thread runs) leaves the repository as its own crash rules
//!   say ([`rewind_repo`], "After a crash"): the next run finishes it.
//! - An `init` interrupted before it wrote `clients.json` leaves a
//!   directory that `serve` refuses as not made by `init` and that `init`
//!   refuses as taken: remove it and run `init` again. With `--store`, the
//!   repository may already exist on the store then: `init` names it;
//!   delete its prefix (it holds no client's data yet) and run `init`
//!   again.

mod api;
mod auth;
mod bodies;
pub mod cli;
mod data;
mod metrics;
mod owners;
mod report;
mod retention;
mod secrets;
mod serve;

pub use api::MAX_PINS;
pub use bodies::DEFAULT_BODY_MEMORY;
pub use data::{
    ClientRecord, Clients, Created, DEFAULT_EXPIRY, DataDir, add_client, init, init_with, is_past,
    load_clients, remove_client,
};
pub use report::{DAMAGE, print_damaged, repair, verify};
pub use retention::{
    DEFAULT_EVERY, default_policy, forget, open_for_admin, policy_for, prune, set_client_policy,
    set_default_policy, set_dump_policy,
};
pub use serve::{DEFAULT_IDLE, DEFAULT_PER_ADDRESS, ServeOptions, fingerprint, run as serve};
