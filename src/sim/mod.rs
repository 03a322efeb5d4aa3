//! Built-in simulators of the five vendor APIs, for tests, benchmarks and `caresync simulate`.
//!
//! [`start`] generates a seeded population of UK people (see [`generator`]), spreads copies of
//! them over the five APIs with the inconsistencies real data has, and serves each API on its
//! own loopback port with the documented auth, envelopes, errors, limits and quirks
//! (`shared/api-docs/`, `shared/api-notes.md`). [`SimState`] gives tests the ground truth, the
//! current data, request statistics and knobs to mutate data or inject faults while a sync runs.
//!
//! Layout: `store` (pre-serialized records and cached views), `generator` + `names` (people and
//! records), `faults` (fault middleware, rate-limit windows), one file per API
//! (`carehq`, `marketplace`, `carevalidate`, `pace`), `http_util` (shared helpers).
//!
//! No log line carries personal data: only kinds, ids, counts and statuses.

// Handlers answer early with a ready `Response` as the error of their helpers; boxing it would
// only add noise.
#![allow(clippy::result_large_err)]

pub mod carehq;
pub mod carevalidate;
pub mod faults;
pub mod generator;
pub mod http_util;
pub mod marketplace;
mod names;
pub mod pace;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

pub use faults::FaultConfig;
pub use generator::{PersonTruth, Role, Sex};

use crate::source::kind::SourceKind;
use faults::{Decision, PerSecond, SlidingWindow};
use http_util::{carehq_time, iso_z, now_ms, parse_carehq_time, parse_iso};
use store::{Meta, Record, SourceCell, Store};

/// Fixed demo credentials every simulator accepts (and the only ones).
pub mod creds {
    pub const CAREHQ_ACCOUNT_ID: &str = "6724fbc74f73a2cebf6377f0";
    pub const CAREHQ_API_KEY: &str = "sim-carehq-api-key";
    pub const CAREHQ_API_SECRET: &str = "sim-carehq-api-secret";
    pub const MARKETPLACE_TOKEN: &str = "sim-marketplace-token";
    pub const CAREVALIDATE_API_KEY: &str = "sim-carevalidate-api-key";
    pub const PACE_API_KEY: &str = "sim-pace-api-key";
    pub const PACE_CUSTOMER_ID: &str = "sim-pace-customer";
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Number of generated humans (records ≈ 1.3 × people across the five APIs).
    pub people: usize,
    pub seed: u64,
    /// Truncate every source's dataset to at most N records.
    pub per_source_limit: Option<usize>,
    pub faults: FaultConfig,
    /// CareHQ requests per second per key, PACE requests per window: 429 when exceeded.
    pub enforce_rate_limits: bool,
    /// `Some(p)`: bind `p..p+4` in [`SourceKind::ALL`] order; `None`: ephemeral ports.
    pub port: Option<u16>,
    /// Marketplace: fill `total` and `page` in list envelopes (the docs' example has `null`).
    pub marketplace_totals: bool,
    /// CareHQ rate limit per API key per second [assumed 10].
    pub carehq_rate_per_sec: u32,
    /// PACE: requests allowed in any `pace_window_secs` span [known: typically 5 in 10 s].
    pub pace_rate_requests: u32,
    pub pace_window_secs: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            people: 1000,
            seed: 42,
            per_source_limit: None,
            faults: FaultConfig::default(),
            enforce_rate_limits: false,
            port: None,
            marketplace_totals: false,
            carehq_rate_per_sec: 10,
            pace_rate_requests: 5,
            pace_window_secs: 10,
        }
    }
}

/// Request accounting for one API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub requests: u64,
    pub list_requests: u64,
    /// Responses by HTTP status (injected faults included).
    pub by_status: BTreeMap<u16, u64>,
    /// Responses with status 429.
    pub rate_limited: u64,
    /// Successful creates and updates.
    pub writes: u64,
}

#[derive(Default)]
struct Metrics {
    stats: SimStats,
    log: Vec<(Instant, u16)>,
}

const LOG_CAP: usize = 2_000_000;

fn idx(kind: SourceKind) -> usize {
    SourceKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

struct Inner {
    opts: SimOptions,
    locations: Vec<String>,
    cells: Vec<SourceCell>,
    next_person: AtomicU64,
    inserted_people: Mutex<Vec<u64>>,
    next_seq: Vec<AtomicU64>,
    last_created: Vec<AtomicI64>,
    faults: RwLock<FaultConfig>,
    fault_rngs: Vec<Mutex<ChaCha8Rng>>,
    mutation_rng: Mutex<ChaCha8Rng>,
    metrics: Vec<Mutex<Metrics>>,
    carehq_nonces: Mutex<HashMap<String, i64>>,
    carehq_rate: Mutex<PerSecond>,
    pace_rate: Mutex<SlidingWindow>,
    pace_quota: Mutex<(i64, u32)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Shared state of the running simulators; a cheap clone.
#[derive(Clone)]
pub struct SimState(Arc<Inner>);

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("seed", &self.0.opts.seed)
            .field("people", &self.0.opts.people)
            .finish()
    }
}

impl SimState {
    /// Generates the population and every API's dataset (CPU-bound; seconds for 10⁵–10⁶).
    pub fn generate(opts: SimOptions) -> SimState {
        let started = Instant::now();
        let seed = opts.seed;
        let locations = generator::location_ids(seed);
        let plan = generator::plan(seed, opts.people as u64);
        let mut cells = Vec::with_capacity(5);
        let mut next_seq = Vec::with_capacity(5);
        let mut last_created = Vec::with_capacity(5);
        for (kind, mut entries) in plan {
            if let Some(limit) = opts.per_source_limit {
                entries.truncate(limit);
            }
            let records = generator::render_all(seed, kind, &entries, 0, &locations);
            let mut store = Store::new(kind);
            let mut max_created = 0;
            for rec in records {
                max_created = max_created.max(rec.meta.created_ms);
                store.push(rec);
            }
            tracing::info!(kind = %kind, records = store.len(), "sim dataset generated");
            next_seq.push(AtomicU64::new(entries.len() as u64));
            last_created.push(AtomicI64::new(max_created));
            cells.push(SourceCell::new(store));
        }
        let f = opts.faults.clone();
        let pace_window = SlidingWindow::new(
            opts.pace_rate_requests as usize,
            Duration::from_secs(opts.pace_window_secs),
        );
        tracing::info!(
            people = opts.people,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sim generated"
        );
        SimState(Arc::new(Inner {
            next_person: AtomicU64::new(opts.people as u64),
            opts,
            locations,
            cells,
            inserted_people: Mutex::new(Vec::new()),
            next_seq,
            last_created,
            fault_rngs: (0..5)
                .map(|i| Mutex::new(ChaCha8Rng::seed_from_u64(generator::mix(f.seed ^ i))))
                .collect(),
            mutation_rng: Mutex::new(ChaCha8Rng::seed_from_u64(generator::mix(f.seed ^ 99))),
            faults: RwLock::new(f),
            metrics: (0..5).map(|_| Mutex::new(Metrics::default())).collect(),
            carehq_nonces: Mutex::new(HashMap::new()),
            carehq_rate: Mutex::new(PerSecond::default()),
            pace_rate: Mutex::new(pace_window),
            pace_quota: Mutex::new((0, 0)),
        }))
    }

    pub(crate) fn options(&self) -> &SimOptions {
        &self.0.opts
    }

    pub(crate) fn cell(&self, kind: SourceKind) -> &SourceCell {
        &self.0.cells[idx(kind)]
    }

    pub(crate) fn read(&self, kind: SourceKind) -> RwLockReadGuard<'_, Store> {
        self.cell(kind)
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write(&self, kind: SourceKind) -> RwLockWriteGuard<'_, Store> {
        self.cell(kind)
            .store
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The CareHQ location ids (one per care home); `location` must be one of them on create.
    pub fn locations(&self) -> &[String] {
        &self.0.locations
    }

    /// All live records of `kind` in the API's default list order.
    fn default_order(&self, kind: SourceKind, store: &Store) -> Vec<u32> {
        let mut slots: Vec<u32> = store.live().map(|(i, _)| i).collect();
        let key = |i: &u32| store.at(*i);
        match kind {
            SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => {
                slots.sort_by(|a, b| key(a).map(|r| &r.key).cmp(&key(b).map(|r| &r.key)))
            }
            SourceKind::MarketplaceUsers => slots.sort_by(|a, b| {
                let ka = key(a).map(|r| (r.meta.created_ms, &r.key));
                let kb = key(b).map(|r| (r.meta.created_ms, &r.key));
                kb.cmp(&ka)
            }),
            SourceKind::CarevalidateUsers => slots.sort_by(|a, b| {
                let ka = key(a).map(|r| (r.meta.created_ms, &r.meta.uid));
                let kb = key(b).map(|r| (r.meta.created_ms, &r.meta.uid));
                ka.cmp(&kb)
            }),
            SourceKind::PaceUsers => {}
        }
        slots
    }

    /// Current bodies, as the API would serve them with all attributes, in default list order.
    pub fn records(&self, kind: SourceKind) -> Vec<Value> {
        let store = self.read(kind);
        self.default_order(kind, &store)
            .into_iter()
            .filter_map(|i| store.at(i).map(|r| r.value()))
            .collect()
    }

    /// Keys as the API exposes them (`_id`, `id`, email as stored, `UserGuid` as stored).
    pub fn keys(&self, kind: SourceKind) -> Vec<String> {
        let store = self.read(kind);
        self.default_order(kind, &store)
            .into_iter()
            .filter_map(|i| store.at(i).map(|r| r.key.to_string()))
            .collect()
    }

    pub fn count(&self, kind: SourceKind) -> usize {
        self.read(kind).len()
    }

    /// Ground truth: which records describe the same human (same person number).
    pub fn truth(&self) -> Vec<(SourceKind, String, u64)> {
        let mut out = Vec::new();
        for kind in SourceKind::ALL {
            let store = self.read(kind);
            out.extend(
                store
                    .live()
                    .map(|(_, r)| (kind, r.key.to_string(), r.person)),
            );
        }
        out
    }

    /// The generated humans: the base population and everyone inserted since.
    pub fn people(&self) -> Vec<PersonTruth> {
        let seed = self.0.opts.seed;
        let mut out: Vec<PersonTruth> = (0..self.0.opts.people as u64)
            .map(|n| generator::person(seed, n))
            .collect();
        let inserted = lock(&self.0.inserted_people).clone();
        out.extend(inserted.into_iter().map(|n| generator::person(seed, n)));
        out
    }

    pub fn faults(&self) -> FaultConfig {
        self.0
            .faults
            .read()
            .map(|f| f.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replaces the fault configuration and reseeds the fault dice.
    pub fn set_faults(&self, f: FaultConfig) {
        for (i, rng) in self.0.fault_rngs.iter().enumerate() {
            *lock(rng) = ChaCha8Rng::seed_from_u64(generator::mix(f.seed ^ i as u64));
        }
        *lock(&self.0.mutation_rng) = ChaCha8Rng::seed_from_u64(generator::mix(f.seed ^ 99));
        match self.0.faults.write() {
            Ok(mut g) => *g = f,
            Err(e) => *e.into_inner() = f,
        }
    }

    pub(crate) fn roll(&self, kind: SourceKind, f: &FaultConfig) -> Decision {
        faults::roll(&mut lock(&self.0.fault_rngs[idx(kind)]), f)
    }

    /// Appends `n` new realistic records (new humans) to `kind`; returns their keys.
    pub fn insert_new(&self, kind: SourceKind, n: usize) -> Vec<String> {
        let seed = self.0.opts.seed;
        let want = if matches!(kind, SourceKind::CarehqUsers | SourceKind::PaceUsers) {
            Role::Staff
        } else {
            Role::Resident
        };
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            let person = loop {
                let number = self.0.next_person.fetch_add(1, Ordering::Relaxed);
                let p = generator::person(seed, number);
                if p.role == want {
                    break p;
                }
            };
            lock(&self.0.inserted_people).push(person.number);
            let created = self.next_created(kind);
            let seq = self.0.next_seq[idx(kind)].fetch_add(1, Ordering::Relaxed);
            let rec = generator::render(seed, kind, &person, 0, seq, created, &self.0.locations);
            let rec = self.stamp_new(kind, rec, created);
            let key = rec.key.to_string();
            if self.write(kind).push(rec) {
                keys.push(key);
            }
        }
        if n > 0 {
            tracing::debug!(kind = %kind, inserted = keys.len(), "sim records inserted");
        }
        keys
    }

    /// A creation time after every existing record of `kind` (now, or 1 ms later).
    pub(crate) fn next_created(&self, kind: SourceKind) -> i64 {
        let now = now_ms();
        let cell = &self.0.last_created[idx(kind)];
        let mut prev = cell.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match cell.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(p) => prev = p,
            }
        }
    }

    /// New records carry their creation time as `modified`/`updated` too.
    fn stamp_new(&self, kind: SourceKind, rec: Record, created: i64) -> Record {
        let mut value = rec.value();
        if let Some(map) = value.as_object_mut() {
            match kind {
                SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => {
                    map.insert("modified".into(), Value::String(carehq_time(created)));
                }
                SourceKind::MarketplaceUsers => {
                    map.insert("updated".into(), Value::String(iso_z(created)));
                    map.insert("last_visited".into(), Value::String(iso_z(created)));
                }
                _ => {}
            }
        }
        let mut meta = rec.meta.clone();
        meta.modified_ms = created;
        self.build_record(kind, rec.person, value, meta)
    }

    pub(crate) fn next_seq(&self, kind: SourceKind) -> u64 {
        self.0.next_seq[idx(kind)].fetch_add(1, Ordering::Relaxed)
    }

    pub fn delete(&self, kind: SourceKind, key: &str) -> bool {
        self.write(kind).remove(key).is_some()
    }

    /// Sets one top-level field and bumps `modified`/`updated`; false if the key is unknown.
    pub fn update_field(&self, kind: SourceKind, key: &str, field: &str, value: Value) -> bool {
        let mut store = self.write(kind);
        let Some(slot) = store.slot_of(key) else {
            return false;
        };
        let Some(rec) = store.at(slot) else {
            return false;
        };
        let mut body = rec.value();
        let person = rec.person;
        let meta = rec.meta.clone();
        if let Some(map) = body.as_object_mut() {
            map.insert(field.to_string(), value);
        }
        let rec = self.touch(kind, person, body, meta);
        store.replace(slot, rec)
    }

    /// Bumps `modified`/`updated` to now and rebuilds the record.
    pub(crate) fn touch(
        &self,
        kind: SourceKind,
        person: u64,
        mut body: Value,
        mut meta: Meta,
    ) -> Record {
        let now = now_ms().max(meta.modified_ms + 1);
        if let Some(map) = body.as_object_mut() {
            match kind {
                SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => {
                    map.insert("modified".into(), Value::String(carehq_time(now)));
                }
                SourceKind::MarketplaceUsers => {
                    map.insert("updated".into(), Value::String(iso_z(now)));
                }
                _ => {}
            }
        }
        meta.modified_ms = now;
        self.build_record(kind, person, body, meta)
    }

    /// Renders a record from a full body, refreshing the meta derivable from it.
    pub(crate) fn build_record(
        &self,
        kind: SourceKind,
        person: u64,
        body: Value,
        mut meta: Meta,
    ) -> Record {
        let s = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let key = match kind {
            SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => s("_id"),
            SourceKind::MarketplaceUsers => s("id"),
            SourceKind::CarevalidateUsers => s("email"),
            SourceKind::PaceUsers => s("UserGuid"),
        };
        match kind {
            SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => {
                meta.name_lc = Some(
                    format!("{} {}", s("first_name"), s("last_name"))
                        .to_lowercase()
                        .into(),
                );
                // Meta keeps sub-second precision; re-read only what the body changed.
                if carehq_time(meta.modified_ms) != s("modified")
                    && let Some(ms) = parse_carehq_time(&s("modified"))
                {
                    meta.modified_ms = ms;
                }
                if carehq_time(meta.created_ms) != s("created")
                    && let Some(ms) = parse_carehq_time(&s("created"))
                {
                    meta.created_ms = ms;
                }
                meta.suspended = body.get("suspended").is_some_and(|v| !v.is_null());
                if kind == SourceKind::CarehqUsers {
                    meta.email_lc = Some(s("email").trim().to_lowercase().into());
                }
            }
            SourceKind::MarketplaceUsers => {
                meta.email_lc = Some(s("email").trim().to_lowercase().into());
                if iso_z(meta.modified_ms) != s("updated")
                    && let Some(ms) = parse_iso(&s("updated"))
                {
                    meta.modified_ms = ms;
                }
                if iso_z(meta.created_ms) != s("created")
                    && let Some(ms) = parse_iso(&s("created"))
                {
                    meta.created_ms = ms;
                }
            }
            SourceKind::CarevalidateUsers => {
                meta.email_lc = Some(s("email").trim().to_lowercase().into());
            }
            SourceKind::PaceUsers => {
                meta.email_lc = Some(s("EmailAddress").trim().to_lowercase().into());
            }
        }
        let (body, members) = match &body {
            Value::Object(map) => store::render(map),
            _ => (
                b"{}".to_vec().into_boxed_slice(),
                Box::new([]) as Box<[u32]>,
            ),
        };
        Record {
            key: key.into(),
            person,
            body,
            members,
            meta,
        }
    }

    /// A person number for a record created through the API: a new human, recorded as such.
    pub(crate) fn new_person_number(&self) -> u64 {
        let n = self.0.next_person.fetch_add(1, Ordering::Relaxed);
        lock(&self.0.inserted_people).push(n);
        n
    }

    /// Applies the `inserts_per_list_request` / `deletes_per_list_request` faults.
    pub(crate) fn before_list(&self, kind: SourceKind) {
        lock(&self.0.metrics[idx(kind)]).stats.list_requests += 1;
        let f = self.faults();
        if f.inserts_per_list_request > 0 {
            self.insert_new(kind, f.inserts_per_list_request);
        }
        for _ in 0..f.deletes_per_list_request {
            let mut store = self.write(kind);
            let n = store.slots.len();
            if store.is_empty() || n == 0 {
                break;
            }
            let mut rng = lock(&self.0.mutation_rng);
            for _ in 0..64 {
                let i = rng.gen_range(0..n) as u32;
                if let Some(key) = store.at(i).map(|r| r.key.to_string()) {
                    store.remove(&key);
                    break;
                }
            }
        }
    }

    pub fn stats(&self, kind: SourceKind) -> SimStats {
        lock(&self.0.metrics[idx(kind)]).stats.clone()
    }

    pub fn request_log(&self, kind: SourceKind) -> Vec<(Instant, u16)> {
        lock(&self.0.metrics[idx(kind)]).log.clone()
    }

    pub(crate) fn note_request(&self, kind: SourceKind) {
        lock(&self.0.metrics[idx(kind)]).stats.requests += 1;
    }

    pub(crate) fn note_status(&self, kind: SourceKind, status: u16) {
        let mut m = lock(&self.0.metrics[idx(kind)]);
        *m.stats.by_status.entry(status).or_insert(0) += 1;
        if status == 429 {
            m.stats.rate_limited += 1;
        }
        if m.log.len() < LOG_CAP {
            m.log.push((Instant::now(), status));
        }
    }

    pub(crate) fn note_write(&self, kind: SourceKind) {
        lock(&self.0.metrics[idx(kind)]).stats.writes += 1;
    }

    /// CareHQ: false if the nonce was seen in the last 600 s (then it is remembered).
    pub(crate) fn carehq_fresh_nonce(&self, nonce: &str, now_secs: i64) -> bool {
        let mut seen = lock(&self.0.carehq_nonces);
        if seen.len() > 200_000 {
            seen.retain(|_, t| now_secs - *t < 600);
        }
        if seen.contains_key(nonce) {
            return false;
        }
        seen.insert(nonce.to_string(), now_secs);
        true
    }

    /// CareHQ: `(allowed, limit, remaining, reset)` for a request with this key.
    pub(crate) fn carehq_rate(&self, key: &str) -> (bool, u32, u32, f64) {
        let opts = &self.0.opts;
        // Unenforced, the headers advertise a limit the benchmark cannot reach.
        let limit = if opts.enforce_rate_limits {
            opts.carehq_rate_per_sec
        } else {
            1_000_000
        };
        let (ok, remaining, reset) =
            lock(&self.0.carehq_rate).hit(key, now_ms(), limit, opts.enforce_rate_limits);
        (ok, limit, remaining, reset)
    }

    /// PACE: `Err((title, seconds))` when the rate limit or the daily quota is exceeded.
    pub(crate) fn pace_admit(&self) -> Result<(), (&'static str, u64)> {
        let now = now_ms();
        if let Some(quota) = self.faults().pace_daily_quota {
            let day = now.div_euclid(86_400_000);
            let mut q = lock(&self.0.pace_quota);
            if q.0 != day {
                *q = (day, 0);
            }
            if q.1 >= quota {
                let secs = ((day + 1) * 86_400_000 - now).div_euclid(1000) as u64 + 1;
                return Err(("Maximum quota of requests exceeded", secs));
            }
            q.1 += 1;
        }
        if self.0.opts.enforce_rate_limits
            && let Err(wait) = lock(&self.0.pace_rate).check(Instant::now())
        {
            let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
            return Err(("Request rate exceeded", secs));
        }
        Ok(())
    }
}

/// The five running servers.
pub struct Simulators {
    state: SimState,
    addrs: Vec<(SourceKind, SocketAddr)>,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Simulators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulators")
            .field("addrs", &self.addrs)
            .finish()
    }
}

/// Generates the data and starts the five servers on loopback.
pub async fn start(opts: SimOptions) -> anyhow::Result<Simulators> {
    let port = opts.port;
    let state = tokio::task::spawn_blocking(move || SimState::generate(opts))
        .await
        .context("generating the simulated datasets")?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut addrs = Vec::with_capacity(5);
    let mut tasks = Vec::with_capacity(5);
    for (i, kind) in SourceKind::ALL.into_iter().enumerate() {
        let bind_port = match port {
            Some(p) => p
                .checked_add(i as u16)
                .with_context(|| format!("port {p} leaves no room for five servers"))?,
            None => 0,
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", bind_port))
            .await
            .with_context(|| format!("binding the {kind} simulator to 127.0.0.1:{bind_port}"))?;
        let addr = listener.local_addr()?;
        let router = match kind {
            SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => {
                carehq::router(state.clone())
            }
            SourceKind::MarketplaceUsers => marketplace::router(state.clone()),
            SourceKind::CarevalidateUsers => carevalidate::router(state.clone()),
            SourceKind::PaceUsers => pace::router(state.clone()),
        }
        .layer(axum::middleware::from_fn_with_state(
            (state.clone(), kind),
            faults::middleware,
        ));
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::warn!(kind = %kind, error = %e, "sim server stopped with an error");
            }
        }));
        tracing::info!(kind = %kind, %addr, "sim server listening");
        addrs.push((kind, addr));
    }
    Ok(Simulators {
        state,
        addrs,
        shutdown: tx,
        tasks,
    })
}

impl Simulators {
    /// `http://127.0.0.1:PORT`; caresync appends `kind.collection_path()`.
    pub fn base_url(&self, kind: SourceKind) -> String {
        let addr = self
            .addrs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        format!("http://{addr}")
    }

    pub fn state(&self) -> SimState {
        self.state.clone()
    }

    /// One line per API: kind, base URL, collection URL, record count, credentials.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for kind in SourceKind::ALL {
            let base = self.base_url(kind);
            let creds = match kind {
                SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => format!(
                    "account_id={} api_key={} api_secret={}",
                    creds::CAREHQ_ACCOUNT_ID,
                    creds::CAREHQ_API_KEY,
                    creds::CAREHQ_API_SECRET
                ),
                SourceKind::MarketplaceUsers => format!("token={}", creds::MARKETPLACE_TOKEN),
                SourceKind::CarevalidateUsers => format!("api_key={}", creds::CAREVALIDATE_API_KEY),
                SourceKind::PaceUsers => format!(
                    "api_key={} customer_id={}",
                    creds::PACE_API_KEY,
                    creds::PACE_CUSTOMER_ID
                ),
            };
            out.push_str(&format!(
                "{:<22} {base:<24} {base}{:<20} {:>8} records  {creds}\n",
                kind.as_str(),
                kind.collection_path(),
                self.state.count(kind)
            ));
        }
        out
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the servers.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests;
