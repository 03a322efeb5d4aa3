//! `sync.toml`: raw TOML → validated [`Config`] in one step that reports every problem at
//! once, each with the file and the key. Secrets come only from environment variables.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};
use url::Url;

use crate::source::kind::SourceKind;

/// A secret read from the environment. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub enum Credentials {
    CareHq {
        account_id: Secret,
        api_key: Secret,
        api_secret: Secret,
    },
    Bearer(Secret),
    CvApiKey(Secret),
    Pace {
        api_key: Secret,
        customer_id: Secret,
        customer_id_header: String,
    },
}

impl Credentials {
    /// Identifies the API key for sharing a rate-limit budget, without revealing it.
    pub fn budget_key(&self) -> u64 {
        let key = match self {
            Credentials::CareHq { api_key, .. } => api_key.expose(),
            Credentials::Bearer(k) | Credentials::CvApiKey(k) => k.expose(),
            Credentials::Pace { api_key, .. } => api_key.expose(),
        };
        xxhash_rust::xxh3::xxh3_64(key.as_bytes())
    }
}

/// "N requests per S": at most `requests` in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u32,
    pub per: Duration,
}

impl RateLimit {
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let err = || format!("`{text}` is not a rate such as \"10/1s\", \"5/10s\" or \"600/1m\"");
        let (n, span) = text.trim().split_once('/').ok_or_else(err)?;
        let requests: u32 = n.trim().parse().map_err(|_| err())?;
        let span = span.trim();
        let (digits, unit) = span.split_at(
            span.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(span.len()),
        );
        let count: u64 = if digits.is_empty() {
            1
        } else {
            digits.parse().map_err(|_| err())?
        };
        let per = match unit {
            "ms" => Duration::from_millis(count),
            "s" => Duration::from_secs(count),
            "m" => Duration::from_secs(count * 60),
            "h" => Duration::from_secs(count * 3600),
            _ => return Err(err()),
        };
        if requests == 0 || per.is_zero() {
            return Err(err());
        }
        Ok(RateLimit { requests, per })
    }
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub name: String,
    pub kind: SourceKind,
    /// Everything before the documented path, without a trailing slash.
    pub base_url: Url,
    pub credentials: Credentials,
    pub page_size: u32,
    /// `None`: the kind's default (CareHQ learns its limit from the rate-limit headers).
    pub rate_limit: Option<RateLimit>,
    pub schedule: Option<String>,
    /// CareHQ: run the id-only deletion sweep on every Nth incremental sync (0: never).
    pub deletion_sweep_every: u32,
}

impl SourceConfig {
    /// The collection URL: `base_url` + the kind's documented path.
    pub fn collection_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url.as_str().trim_end_matches('/'),
            self.kind.collection_path()
        )
    }

    /// The rate limit in force before the API says otherwise.
    pub fn effective_rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit.or(match self.kind {
            SourceKind::PaceUsers => Some(RateLimit {
                requests: 5,
                per: Duration::from_secs(10),
            }),
            _ => None,
        })
    }
}

/// What caresync writes to one source.
#[derive(Debug, Clone, Default)]
pub struct PushPolicy {
    /// Canonical fields kept in line with the canonical person. Empty: nothing is written.
    pub fields: Vec<crate::model::Field>,
    /// Create the record in this source for people who lack one there.
    pub create: bool,
    /// Source-side fields sent with every create (CareHQ: location, funding_type, service, day_care_use).
    pub create_defaults: BTreeMap<String, serde_json::Value>,
}

/// HTTP behaviour shared by every source.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_retries: usize,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Page requests in flight at once per source, where the pagination style allows.
    pub concurrency: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_retries: 8,
            min_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            concurrency: 4,
        }
    }
}

/// The daemon's own settings (`[daemon]`).
#[derive(Debug, Clone, Default)]
pub struct DaemonSettings {
    /// Where `/healthz` and `/metrics` are served; `None`: not served.
    pub listen: Option<std::net::SocketAddr>,
    /// A scheduled source is unhealthy when it has not succeeded for this long.
    /// `None`: three times its schedule's interval, at least five minutes.
    pub health_window: Option<Duration>,
    /// When `push` runs (cron with seconds); `None`: not scheduled.
    pub push_schedule: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub store_path: PathBuf,
    /// A folder of mapping files replacing the built-in ones (`[mappings] dir`).
    pub mappings_dir: Option<PathBuf>,
    /// Identity resolution thresholds (`[matching]`).
    pub matching: crate::identity::MatchConfig,
    /// What is written back to each source (`[push.<source>]`); sources absent get nothing.
    pub push: BTreeMap<String, PushPolicy>,
    /// Which source's value each canonical field takes (`[survivorship]`).
    pub survivorship: crate::person::survivorship::Policy,
    pub http: HttpSettings,
    /// `[daemon]`: health and metrics listener, health window, push schedule.
    pub daemon: DaemonSettings,
    /// In name order.
    pub sources: Vec<SourceConfig>,
}

impl Config {
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// Every problem found in a config file, each naming the file and key.
#[derive(Debug)]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{}: {n} problem{} in the configuration",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {}: {p}", self.file.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Looks up environment variables; tests and the demo pass their own.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub fn load(file: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigErrors {
        file: file.to_path_buf(),
        problems: vec![format!("cannot read the file: {e}")],
    })?;
    parse(&text, file, env)
}

pub fn parse(text: &str, file: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        problems: Vec::new(),
    };
    let table: Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigErrors {
                file: file.to_path_buf(),
                problems: vec![format!("not valid TOML: {}", e.to_string().trim())],
            });
        }
    };
    let folder = file.parent().map(Path::to_path_buf).unwrap_or_default();
    v.unknown_keys(
        "",
        &table,
        &[
            "store",
            "sources",
            "http",
            "mappings",
            "matching",
            "survivorship",
            "push",
            "daemon",
        ],
    );
    let matching = v.matching(&table);
    let survivorship = v.survivorship(&table);
    let mappings_dir = v.table(&table, "mappings").and_then(|m| {
        v.unknown_keys("mappings", m, &["dir"]);
        v.string(m, "mappings", "dir").map(|d| folder.join(d))
    });

    let store_path = match v.table(&table, "store") {
        Some(store) => {
            v.unknown_keys("store", store, &["path"]);
            v.string(store, "store", "path").map(|p| folder.join(p))
        }
        None => None,
    }
    .unwrap_or_else(|| folder.join("caresync.db"));

    let http = v.http(&table);
    let daemon = v.daemon(&table);

    let mut sources = Vec::new();
    match table.get("sources") {
        None => v.problem(
            "sources",
            "no sources: add at least one [sources.<name>] table",
        ),
        Some(Value::Table(all)) => {
            let sorted: BTreeMap<_, _> = all.iter().collect();
            for (name, value) in sorted {
                let key = format!("sources.{name}");
                match value {
                    Value::Table(t) => {
                        if let Some(s) = v.source(name, &key, t, env) {
                            sources.push(s);
                        }
                    }
                    _ => v.problem(&key, "must be a table"),
                }
            }
        }
        Some(_) => v.problem("sources", "must be a table of [sources.<name>] tables"),
    }

    // Push tables are checked against the source tables as written, so a source with its
    // own problems is not also reported as missing here.
    let declared: Vec<(String, Option<SourceKind>)> = match table.get("sources") {
        Some(Value::Table(all)) => all
            .iter()
            .map(|(name, t)| {
                let kind = t
                    .get("kind")
                    .and_then(Value::as_str)
                    .and_then(|k| k.parse().ok());
                (name.clone(), kind)
            })
            .collect(),
        _ => Vec::new(),
    };
    let push = v.push(&table, &declared);

    if v.problems.is_empty() {
        Ok(Config {
            file: file.to_path_buf(),
            store_path,
            mappings_dir,
            matching,
            survivorship,
            push,
            http,
            daemon,
            sources,
        })
    } else {
        Err(ConfigErrors {
            file: file.to_path_buf(),
            problems: v.problems,
        })
    }
}

struct Validator {
    problems: Vec<String>,
}

const COMMON_SOURCE_KEYS: &[&str] = &[
    "kind",
    "base_url",
    "page_size",
    "rate_limit",
    "allow_insecure_http",
    "schedule",
];

impl Validator {
    fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems.push(format!("{key}: {message}"));
    }

    fn unknown_keys(&mut self, at: &str, table: &Table, allowed: &[&str]) {
        for key in table.keys() {
            if !allowed.contains(&key.as_str()) {
                let full = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                self.problem(
                    &full,
                    format!("unknown key (expected one of: {})", allowed.join(", ")),
                );
            }
        }
    }

    fn table<'t>(&mut self, parent: &'t Table, key: &str) -> Option<&'t Table> {
        match parent.get(key) {
            None => None,
            Some(Value::Table(t)) => Some(t),
            Some(_) => {
                self.problem(key, "must be a table");
                None
            }
        }
    }

    fn string(&mut self, table: &Table, at: &str, key: &str) -> Option<String> {
        match table.get(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.problem(&format!("{at}.{key}"), "must be a string");
                None
            }
        }
    }

    fn integer(&mut self, table: &Table, at: &str, key: &str, min: i64, max: i64) -> Option<i64> {
        match table.get(key) {
            None => None,
            Some(Value::Integer(i)) if (min..=max).contains(i) => Some(*i),
            Some(_) => {
                self.problem(
                    &format!("{at}.{key}"),
                    format!("must be a whole number from {min} to {max}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, table: &Table, at: &str, key: &str) -> Option<bool> {
        match table.get(key) {
            None => None,
            Some(Value::Boolean(b)) => Some(*b),
            Some(_) => {
                self.problem(&format!("{at}.{key}"), "must be true or false");
                None
            }
        }
    }

    fn http(&mut self, root: &Table) -> HttpSettings {
        let mut http = HttpSettings::default();
        let Some(t) = self.table(root, "http") else {
            return http;
        };
        self.unknown_keys(
            "http",
            t,
            &[
                "timeout_secs",
                "connect_timeout_secs",
                "max_retries",
                "min_backoff_ms",
                "max_backoff_ms",
                "concurrency",
            ],
        );
        if let Some(s) = self.integer(t, "http", "timeout_secs", 1, 3600) {
            http.timeout = Duration::from_secs(s as u64);
        }
        if let Some(s) = self.integer(t, "http", "connect_timeout_secs", 1, 600) {
            http.connect_timeout = Duration::from_secs(s as u64);
        }
        if let Some(n) = self.integer(t, "http", "max_retries", 0, 100) {
            http.max_retries = n as usize;
        }
        if let Some(ms) = self.integer(t, "http", "min_backoff_ms", 1, 600_000) {
            http.min_backoff = Duration::from_millis(ms as u64);
        }
        if let Some(ms) = self.integer(t, "http", "max_backoff_ms", 1, 3_600_000) {
            http.max_backoff = Duration::from_millis(ms as u64);
        }
        if let Some(n) = self.integer(t, "http", "concurrency", 1, 64) {
            http.concurrency = n as usize;
        }
        if http.min_backoff > http.max_backoff {
            self.problem("http.min_backoff_ms", "must not exceed http.max_backoff_ms");
        }
        http
    }

    fn daemon(&mut self, root: &Table) -> DaemonSettings {
        let mut d = DaemonSettings::default();
        let Some(t) = self.table(root, "daemon") else {
            return d;
        };
        self.unknown_keys("daemon", t, &["listen", "health_window", "push_schedule"]);
        if let Some(listen) = self.string(t, "daemon", "listen") {
            match listen.parse::<std::net::SocketAddr>() {
                Ok(addr) => d.listen = Some(addr),
                Err(_) => self.problem(
                    "daemon.listen",
                    format!("`{listen}` is not an address and port such as \"127.0.0.1:9464\""),
                ),
            }
        }
        if let Some(window) = self.string(t, "daemon", "health_window") {
            match parse_duration(&window) {
                Some(w) => d.health_window = Some(w),
                None => self.problem(
                    "daemon.health_window",
                    format!("`{window}` is not a duration such as \"90s\", \"30m\" or \"2h\""),
                ),
            }
        }
        if let Some(schedule) = self.string(t, "daemon", "push_schedule") {
            match crate::daemon::schedule::validate(&schedule) {
                Ok(()) => d.push_schedule = Some(schedule),
                Err(e) => self.problem("daemon.push_schedule", e),
            }
        }
        d
    }

    fn float(&mut self, table: &Table, at: &str, key: &str) -> Option<f64> {
        match table.get(key) {
            None => None,
            Some(Value::Float(f)) => Some(*f),
            Some(Value::Integer(i)) => Some(*i as f64),
            Some(_) => {
                self.problem(&format!("{at}.{key}"), "must be a number");
                None
            }
        }
    }

    fn push(
        &mut self,
        root: &Table,
        sources: &[(String, Option<SourceKind>)],
    ) -> BTreeMap<String, PushPolicy> {
        let mut out = BTreeMap::new();
        let Some(all) = self.table(root, "push") else {
            return out;
        };
        for (name, value) in all {
            let at = format!("push.{name}");
            let Some(t) = value.as_table() else {
                self.problem(&at, "must be a table");
                continue;
            };
            self.unknown_keys(&at, t, &["fields", "create", "create_defaults"]);
            match sources.iter().find(|(n, _)| n == name) {
                None => {
                    self.problem(&at, "there is no [sources.NAME] of that name");
                    continue;
                }
                Some((_, Some(SourceKind::CarehqUsers))) => {
                    self.problem(
                        &at,
                        "CareHQ users are read-only: nothing can be pushed to them",
                    );
                    continue;
                }
                Some(_) => {}
            }
            let mut fields = Vec::new();
            match t.get("fields") {
                None => {}
                Some(Value::Array(list)) => {
                    for f in list {
                        match f.as_str().and_then(crate::model::Field::from_name) {
                            Some(field) => fields.push(field),
                            None => self.problem(
                                &format!("{at}.fields"),
                                format!("{f} is not a canonical field"),
                            ),
                        }
                    }
                }
                Some(_) => self.problem(
                    &format!("{at}.fields"),
                    "must be a list of canonical field names",
                ),
            }
            let create = self.boolean(t, &at, "create").unwrap_or(false);
            let mut create_defaults = BTreeMap::new();
            match t.get("create_defaults") {
                None => {}
                Some(Value::Table(d)) => {
                    for (k, v) in d {
                        let json = match v {
                            Value::String(s) => serde_json::Value::String(s.clone()),
                            Value::Boolean(b) => serde_json::Value::Bool(*b),
                            Value::Integer(i) => serde_json::Value::from(*i),
                            _ => {
                                self.problem(
                                    &format!("{at}.create_defaults.{k}"),
                                    "must be a string, number or boolean",
                                );
                                continue;
                            }
                        };
                        create_defaults.insert(k.clone(), json);
                    }
                }
                Some(_) => self.problem(
                    &format!("{at}.create_defaults"),
                    "must be a table of source field = value",
                ),
            }
            out.insert(
                name.clone(),
                PushPolicy {
                    fields,
                    create,
                    create_defaults,
                },
            );
        }
        out
    }

    fn matching(&mut self, root: &Table) -> crate::identity::MatchConfig {
        let mut m = crate::identity::MatchConfig::default();
        let Some(t) = self.table(root, "matching") else {
            return m;
        };
        self.unknown_keys("matching", t, &["link_threshold", "review_threshold"]);
        if let Some(x) = self.float(t, "matching", "link_threshold") {
            m.link_threshold = x;
        }
        if let Some(x) = self.float(t, "matching", "review_threshold") {
            m.review_threshold = x;
        }
        if m.review_threshold > m.link_threshold {
            self.problem(
                "matching.review_threshold",
                "must not exceed matching.link_threshold",
            );
        }
        m
    }

    fn survivorship(&mut self, root: &Table) -> crate::person::survivorship::Policy {
        use crate::person::survivorship::{Policy, Rule};
        let mut policy = Policy::default();
        let Some(t) = self.table(root, "survivorship") else {
            return policy;
        };
        self.unknown_keys("survivorship", t, &["source_priority", "rules", "fields"]);
        let rules_of = |v: &mut Self, key: &str, value: &Value| -> Option<Vec<Rule>> {
            let list = value.as_array().filter(|a| !a.is_empty());
            let rules: Option<Vec<Rule>> =
                list.and_then(|a| a.iter().map(|r| r.as_str().and_then(Rule::parse)).collect());
            if rules.is_none() {
                v.problem(
                    key,
                    "must be a list of rules: source_priority, most_recent, most_complete",
                );
            }
            rules
        };
        if let Some(value) = t.get("source_priority") {
            match value.as_array().and_then(|a| {
                a.iter()
                    .map(|s| s.as_str().map(String::from))
                    .collect::<Option<Vec<_>>>()
            }) {
                Some(names) => policy.source_priority = names,
                None => self.problem(
                    "survivorship.source_priority",
                    "must be a list of source names",
                ),
            }
        }
        if let Some(value) = t.get("rules")
            && let Some(rules) = rules_of(self, "survivorship.rules", value)
        {
            policy.default_rules = rules;
        }
        if let Some(fields) = self.table(t, "fields") {
            for (name, value) in fields {
                let key = format!("survivorship.fields.{name}");
                match crate::model::Field::from_name(name) {
                    Some(field) => {
                        if let Some(rules) = rules_of(self, &key, value) {
                            policy.field_rules.insert(field, rules);
                        }
                    }
                    None => self.problem(&key, "unknown canonical field"),
                }
            }
        }
        policy
    }

    fn secret(&mut self, t: &Table, at: &str, key: &str, env: EnvLookup<'_>) -> Option<Secret> {
        let full = format!("{at}.{key}");
        let Some(var) = self.string(t, at, key) else {
            if !t.contains_key(key) {
                self.problem(
                    &full,
                    "missing: name the environment variable that holds this credential",
                );
            }
            return None;
        };
        match env(&var) {
            Some(value) if !value.trim().is_empty() => Some(Secret::new(value)),
            Some(_) => {
                self.problem(&full, format!("environment variable `{var}` is empty"));
                None
            }
            None => {
                self.problem(&full, format!("environment variable `{var}` is not set"));
                None
            }
        }
    }

    fn source(
        &mut self,
        name: &str,
        at: &str,
        t: &Table,
        env: EnvLookup<'_>,
    ) -> Option<SourceConfig> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.problem(at, "source names may use only letters, digits, `_` and `-`");
        }
        let kind = match self.string(t, at, "kind") {
            None => {
                if !t.contains_key("kind") {
                    self.problem(&format!("{at}.kind"), "missing");
                }
                None
            }
            Some(k) => match k.parse::<SourceKind>() {
                Ok(kind) => Some(kind),
                Err(e) => {
                    self.problem(&format!("{at}.kind"), e);
                    None
                }
            },
        };
        let specific: &[&str] = match kind {
            Some(k) if k.is_carehq() => &[
                "account_id_env",
                "api_key_env",
                "api_secret_env",
                "deletion_sweep_every",
            ],
            Some(SourceKind::PaceUsers) => {
                &["api_key_env", "customer_id_env", "customer_id_header"]
            }
            Some(_) => &["api_key_env"],
            None => &[],
        };
        if kind.is_some() {
            let allowed: Vec<&str> = COMMON_SOURCE_KEYS.iter().chain(specific).copied().collect();
            self.unknown_keys(at, t, &allowed);
        }
        let allow_insecure = self.boolean(t, at, "allow_insecure_http").unwrap_or(false);
        let base_url = self.base_url(t, at, allow_insecure);
        let max = kind.map(SourceKind::max_page_size).unwrap_or(100);
        let page_size = self
            .integer(t, at, "page_size", 1, max as i64)
            .map(|n| n as u32);
        let rate_limit =
            self.string(t, at, "rate_limit")
                .and_then(|r| match RateLimit::parse(&r) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        self.problem(&format!("{at}.rate_limit"), e);
                        None
                    }
                });
        let schedule = self.string(t, at, "schedule");
        if let Some(Err(e)) = schedule.as_deref().map(crate::daemon::schedule::validate) {
            self.problem(&format!("{at}.schedule"), e);
        }
        let deletion_sweep_every = self
            .integer(t, at, "deletion_sweep_every", 0, 10_000)
            .map_or(1, |n| n as u32);
        let kind = kind?;
        let credentials = match kind {
            SourceKind::CarehqServiceUsers | SourceKind::CarehqUsers => {
                let account_id = self.secret(t, at, "account_id_env", env);
                let api_key = self.secret(t, at, "api_key_env", env);
                let api_secret = self.secret(t, at, "api_secret_env", env);
                Credentials::CareHq {
                    account_id: account_id?,
                    api_key: api_key?,
                    api_secret: api_secret?,
                }
            }
            SourceKind::MarketplaceUsers => {
                Credentials::Bearer(self.secret(t, at, "api_key_env", env)?)
            }
            SourceKind::CarevalidateUsers => {
                Credentials::CvApiKey(self.secret(t, at, "api_key_env", env)?)
            }
            SourceKind::PaceUsers => {
                let api_key = self.secret(t, at, "api_key_env", env);
                let customer_id = self.secret(t, at, "customer_id_env", env);
                let header = self
                    .string(t, at, "customer_id_header")
                    .unwrap_or_else(|| "x-customer-id".to_string());
                Credentials::Pace {
                    api_key: api_key?,
                    customer_id: customer_id?,
                    customer_id_header: header,
                }
            }
        };
        Some(SourceConfig {
            name: name.to_string(),
            kind,
            base_url: base_url?,
            credentials,
            page_size: page_size.unwrap_or(max),
            rate_limit,
            schedule,
            deletion_sweep_every,
        })
    }

    fn base_url(&mut self, t: &Table, at: &str, allow_insecure: bool) -> Option<Url> {
        let key = format!("{at}.base_url");
        let Some(raw) = self.string(t, at, "base_url") else {
            if !t.contains_key("base_url") {
                self.problem(&key, "missing");
            }
            return None;
        };
        let url = match Url::parse(raw.trim()) {
            Ok(u) => u,
            Err(e) => {
                self.problem(&key, format!("`{raw}` is not a URL: {e}"));
                return None;
            }
        };
        if url.query().is_some() || url.fragment().is_some() {
            self.problem(&key, "must not carry a query or fragment");
        }
        match url.scheme() {
            "https" => {}
            "http" if allow_insecure || is_loopback(&url) => {}
            "http" => self.problem(
                &key,
                "must use https for a host that is not loopback (or set allow_insecure_http = true)",
            ),
            other => self.problem(&key, format!("scheme `{other}` is not http or https")),
        }
        Some(url)
    }
}

/// "90s", "30m", "2h", "1d" (a positive whole number and a unit).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok().filter(|n| *n > 0)?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "EMPTY" => Some(String::new()),
            n if n.starts_with("SET_") => Some(format!("value-of-{n}")),
            _ => None,
        }
    }

    fn parse_ok(text: &str) -> Config {
        parse(text, Path::new("/etc/caresync/sync.toml"), &env).expect("valid config")
    }

    fn problems(text: &str) -> Vec<String> {
        parse(text, Path::new("sync.toml"), &env)
            .expect_err("invalid config")
            .problems
    }

    #[test]
    fn rate_limits_parse() {
        assert_eq!(
            RateLimit::parse("10/1s"),
            Ok(RateLimit {
                requests: 10,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            RateLimit::parse("5/10s"),
            Ok(RateLimit {
                requests: 5,
                per: Duration::from_secs(10)
            })
        );
        assert_eq!(
            RateLimit::parse("600/m"),
            Ok(RateLimit {
                requests: 600,
                per: Duration::from_secs(60)
            })
        );
        for bad in ["", "10", "0/1s", "10/0s", "x/1s", "10/1y", "10/-1s"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_full_config_resolves_paths_secrets_and_defaults() {
        let c = parse_ok(
            r#"
            [store]
            path = "data/caresync.db"
            [sources.home_a]
            kind = "carehq_service_users"
            base_url = "https://api.carehq.co.uk/"
            account_id_env = "SET_A"
            api_key_env = "SET_K"
            api_secret_env = "SET_S"
            [sources.home_b]
            kind = "carehq_service_users"
            base_url = "https://proxy.example.org/carehq"
            account_id_env = "SET_A2"
            api_key_env = "SET_K2"
            api_secret_env = "SET_S2"
            page_size = 25
            rate_limit = "10/1s"
            [sources.pace]
            kind = "pace_users"
            base_url = "https://online.cardinus.com"
            api_key_env = "SET_P"
            customer_id_env = "SET_C"
            "#,
        );
        assert_eq!(c.store_path, Path::new("/etc/caresync/data/caresync.db"));
        assert_eq!(c.sources.len(), 3);
        let a = c.source("home_a").unwrap();
        assert_eq!(a.page_size, 100);
        assert_eq!(
            a.collection_url(),
            "https://api.carehq.co.uk/v1/service-users"
        );
        assert_eq!(a.effective_rate_limit(), None);
        let b = c.source("home_b").unwrap();
        assert_eq!(
            b.collection_url(),
            "https://proxy.example.org/carehq/v1/service-users"
        );
        assert_eq!(b.page_size, 25);
        let p = c.source("pace").unwrap();
        assert_eq!(p.collection_url(), "https://online.cardinus.com/api/users");
        assert_eq!(
            p.effective_rate_limit(),
            Some(RateLimit {
                requests: 5,
                per: Duration::from_secs(10)
            })
        );
        match &p.credentials {
            Credentials::Pace {
                customer_id,
                customer_id_header,
                ..
            } => {
                assert_eq!(customer_id.expose(), "value-of-SET_C");
                assert_eq!(customer_id_header, "x-customer-id");
            }
            other => panic!("wrong credentials {other:?}"),
        }
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let p = problems(
            r#"
            colour = "blue"
            [sources.a]
            kind = "carehq_residents"
            base_url = "https://x"
            [sources.b]
            kind = "marketplace_users"
            base_url = "http://api.example.org"
            api_key_env = "UNSET_VAR"
            page_sise = 10
            [sources.c]
            kind = "carevalidate_users"
            base_url = "http://127.0.0.1:9000"
            api_key_env = "EMPTY"
            page_size = 500
            "#,
        );
        let joined = p.join("\n");
        for expected in [
            "colour: unknown key",
            "sources.a.kind: unknown kind `carehq_residents`",
            "sources.b.base_url: must use https",
            "sources.b.api_key_env: environment variable `UNSET_VAR` is not set",
            "sources.b.page_sise: unknown key",
            "sources.c.api_key_env: environment variable `EMPTY` is empty",
            "sources.c.page_size: must be a whole number from 1 to 100",
        ] {
            assert!(
                joined.contains(expected),
                "missing `{expected}` in:\n{joined}"
            );
        }
        assert_eq!(p.len(), 7, "{joined}");
    }

    #[test]
    fn missing_credentials_and_sources_are_named() {
        let p = problems(
            "[sources.x]\nkind = \"pace_users\"\nbase_url = \"https://h\"\napi_key_env = \"SET_K\"\n",
        );
        assert_eq!(
            p,
            vec![
                "sources.x.customer_id_env: missing: name the environment variable that holds this credential"
            ]
        );
        let p = problems("[store]\npath = \"a.db\"\n");
        assert_eq!(
            p,
            vec!["sources: no sources: add at least one [sources.<name>] table"]
        );
    }

    #[test]
    fn insecure_http_needs_loopback_or_opt_in() {
        let base = "[sources.m]\nkind = \"marketplace_users\"\napi_key_env = \"SET_T\"\n";
        for ok in [
            "http://localhost:8080",
            "http://127.0.0.5:1",
            "http://[::1]:9",
        ] {
            parse_ok(&format!("{base}base_url = \"{ok}\"\n"));
        }
        parse_ok(&format!(
            "{base}base_url = \"http://10.0.0.1\"\nallow_insecure_http = true\n"
        ));
        assert_eq!(
            problems(&format!("{base}base_url = \"ftp://h\"\n")).len(),
            1
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let c = Credentials::Bearer(s);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn broken_toml_is_reported_with_the_file() {
        let e = parse("[sources\n", Path::new("conf/sync.toml"), &env).unwrap_err();
        assert!(
            e.to_string().starts_with("conf/sync.toml: 1 problem"),
            "{e}"
        );
        assert!(e.problems[0].starts_with("not valid TOML"), "{e}");
    }
}
