//! The agent's configuration, read in the ECS agent's own format.
//!
//! An ECS node is configured by `/etc/ecs/ecs.config`: `KEY=VALUE` lines with the ECS
//! agent's names (`ECS_CLUSTER`, `ECS_RESERVED_PORTS`, …), and the process environment
//! overrides the file. Wharf's agent reads the same file and names, so an existing node
//! image or user-data script works unchanged; what Wharf needs beyond the ECS agent is
//! configured with keys prefixed `WHARF_`.
//!
//! The whole configuration is parsed here, once, into [`AgentConfig`]: the rest of the
//! agent works on typed values (durations, socket addresses, enums) and never sees a
//! raw string. A value that does not parse is an error naming the key and the value;
//! nothing falls back silently to a default.
//!
//! This module does no I/O beyond reading the one file it is given (and checking
//! whether the default file exists); which file and which environment are the
//! caller's choice.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the ECS agent's configuration file lives on an ECS node.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ecs/ecs.config";

/// The port the task metadata endpoint listens on unless `WHARF_METADATA_ADDR` says
/// otherwise. It is the ECS agent's own metadata port, and it is in the default
/// `ECS_RESERVED_PORTS`, so no task can take it from the agent.
pub const DEFAULT_METADATA_PORT: u16 = 51679;

/// The configuration file to read when the operator names none: `/etc/ecs/ecs.config`
/// if it exists, otherwise `None` (the environment and the defaults alone then
/// configure the agent).
pub fn default_config_path() -> Option<PathBuf> {
    let path = Path::new(DEFAULT_CONFIG_PATH);
    path.is_file().then(|| path.to_path_buf())
}

/// What went wrong reading the agent's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read the agent configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line of the configuration file is not `KEY=VALUE`, a comment or blank.
    #[error("{} line {line}: {reason}", origin_name(.path.as_deref()))]
    Syntax {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
    /// A known key has a value that does not parse or is out of range.
    #[error("invalid value for {key}: {value:?}: {reason}")]
    InvalidValue {
        /// The key, e.g. `ECS_RESERVED_PORTS`.
        key: String,
        /// The value as written (quotes removed).
        value: String,
        /// What the value should have been.
        reason: String,
    },
    /// A `WHARF_` key this agent does not know: most likely a typo, which would
    /// otherwise silently leave the setting at its default.
    #[error("unknown configuration key {key}{}", did_you_mean(.suggestion.as_deref()))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The known key it most resembles, if any is close.
        suggestion: Option<String>,
    },
    /// A key that only makes sense together with another was given alone.
    #[error("{key} is set but {requires} is not; set both or neither")]
    MissingPair {
        /// The key that was set.
        key: String,
        /// The key it needs.
        requires: String,
    },
}

fn origin_name(path: Option<&Path>) -> String {
    path.map_or_else(
        || "agent configuration".to_owned(),
        |p| p.display().to_string(),
    )
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|s| format!(" (did you mean {s}?)"))
        .unwrap_or_default()
}

/// How verbose the agent's log is (`ECS_LOGLEVEL`), with the ECS agent's level names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Only failures the agent cannot continue past.
    Crit,
    /// Errors.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Everything.
    Debug,
}

impl LogLevel {
    /// The level as `ECS_LOGLEVEL` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Crit => "crit",
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }

    /// The `tracing` level that shows the same events. `tracing` has no level above
    /// error, so `crit` maps to error.
    pub fn tracing_level(self) -> tracing::Level {
        match self {
            LogLevel::Crit | LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
        }
    }
}

/// When the agent pulls a task's images (`ECS_IMAGE_PULL_BEHAVIOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImagePullBehavior {
    /// Pull every time; if the pull fails, use the cached image if there is one.
    #[default]
    Default,
    /// Pull every time; if the pull fails, the task fails.
    Always,
    /// Pull only if this agent has not pulled the image before.
    Once,
    /// Use the cached image if there is one; pull otherwise.
    PreferCached,
}

impl ImagePullBehavior {
    /// The behaviour as `ECS_IMAGE_PULL_BEHAVIOR` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullBehavior::Default => "default",
            ImagePullBehavior::Always => "always",
            ImagePullBehavior::Once => "once",
            ImagePullBehavior::PreferCached => "prefer-cached",
        }
    }
}

/// A string that is never printed: `Debug` shows `Secret(***)`, so the configuration
/// can be logged whole without leaking a credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must use it (signing requests).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The agent's configuration: every setting parsed and typed, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// The cluster to join (`ECS_CLUSTER`, default `default`): a name or a cluster ARN.
    pub cluster: String,
    /// The control plane's API endpoint (`ECS_BACKEND_HOST`), always with its scheme:
    /// a bare host name is taken as `https://<host>`. `None` leaves the choice to the
    /// caller (the region's default endpoint).
    pub backend_host: Option<String>,
    /// MiB of the node's memory kept back from tasks (`ECS_RESERVED_MEMORY`, default 0).
    pub reserved_memory_mib: i64,
    /// TCP host ports tasks may not take (`ECS_RESERVED_PORTS`).
    pub reserved_ports: Vec<u16>,
    /// UDP host ports tasks may not take (`ECS_RESERVED_PORTS_UDP`, default none).
    pub reserved_ports_udp: Vec<u16>,
    /// Custom attributes the node registers with (`ECS_INSTANCE_ATTRIBUTES`).
    pub instance_attributes: BTreeMap<String, String>,
    /// Tags the container instance registers with (`ECS_CONTAINER_INSTANCE_TAGS`).
    pub container_instance_tags: BTreeMap<String, String>,
    /// Log drivers tasks may use (`ECS_AVAILABLE_LOGGING_DRIVERS`).
    pub available_logging_drivers: Vec<String>,
    /// How verbose the agent's log is (`ECS_LOGLEVEL`, default `info`).
    pub log_level: LogLevel,
    /// How long a stopped task's containers are kept before removal
    /// (`ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION`, default 3h).
    pub task_cleanup_wait: Duration,
    /// When images are pulled (`ECS_IMAGE_PULL_BEHAVIOR`, default `default`).
    pub image_pull_behavior: ImagePullBehavior,
    /// How long a container gets between SIGTERM and SIGKILL
    /// (`ECS_CONTAINER_STOP_TIMEOUT`, default 30s).
    pub container_stop_timeout: Duration,
    /// How long a container may take to start before it is given up on
    /// (`ECS_CONTAINER_START_TIMEOUT`, default 3m).
    pub container_start_timeout: Duration,
    /// How often unused images are considered for removal
    /// (`ECS_IMAGE_CLEANUP_INTERVAL`, default 30m, as the ECS agent).
    pub image_cleanup_interval: Duration,
    /// Where the agent keeps its state (`ECS_DATADIR`, default `/var/lib/ecs/data`);
    /// always an absolute path.
    pub data_dir: PathBuf,
    /// Whether tasks get role credentials (`ECS_ENABLE_TASK_IAM_ROLE`, default false).
    pub enable_task_iam_role: bool,
    /// The zone the node registers in (`WHARF_AVAILABILITY_ZONE`).
    pub availability_zone: Option<String>,
    /// The instance type the node registers as (`WHARF_INSTANCE_TYPE`).
    pub instance_type: Option<String>,
    /// The access key the agent signs its requests with (`WHARF_ACCESS_KEY_ID`);
    /// set together with [`AgentConfig::secret_access_key`] or not at all.
    pub access_key_id: Option<String>,
    /// The secret half of the agent's key (`WHARF_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<Secret>,
    /// The region the agent signs for (`WHARF_REGION`, default `us-east-1`).
    pub region: String,
    /// Where the task metadata endpoint listens (`WHARF_METADATA_ADDR`, e.g.
    /// `172.17.0.1:51679`). `None` leaves it to the caller, which should bind an
    /// address containers on the Docker bridge reach (the bridge's gateway) on
    /// [`DEFAULT_METADATA_PORT`]: a wildcard address would expose the endpoint beyond
    /// the node.
    pub metadata_addr: Option<SocketAddr>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            cluster: "default".to_owned(),
            backend_host: None,
            reserved_memory_mib: 0,
            reserved_ports: vec![22, 2375, 2376, 51678, 51679],
            reserved_ports_udp: Vec::new(),
            instance_attributes: BTreeMap::new(),
            container_instance_tags: BTreeMap::new(),
            available_logging_drivers: vec!["json-file".to_owned(), "none".to_owned()],
            log_level: LogLevel::Info,
            task_cleanup_wait: Duration::from_secs(3 * 3600),
            image_pull_behavior: ImagePullBehavior::Default,
            container_stop_timeout: Duration::from_secs(30),
            container_start_timeout: Duration::from_secs(3 * 60),
            image_cleanup_interval: Duration::from_secs(30 * 60),
            data_dir: PathBuf::from("/var/lib/ecs/data"),
            enable_task_iam_role: false,
            availability_zone: None,
            instance_type: None,
            access_key_id: None,
            secret_access_key: None,
            region: "us-east-1".to_owned(),
            metadata_addr: None,
        }
    }
}

/// Every `WHARF_` key the agent knows. Any other `WHARF_` key in the configuration
/// file is an error, so a typo cannot silently leave a setting at its default.
const WHARF_KEYS: &[&str] = &[
    "WHARF_AVAILABILITY_ZONE",
    "WHARF_INSTANCE_TYPE",
    "WHARF_ACCESS_KEY_ID",
    "WHARF_SECRET_ACCESS_KEY",
    "WHARF_REGION",
    "WHARF_METADATA_ADDR",
];

/// The `ECS_` keys the agent reads; the ECS agent has many more, which are ignored.
const ECS_KEYS: &[&str] = &[
    "ECS_CLUSTER",
    "ECS_BACKEND_HOST",
    "ECS_RESERVED_MEMORY",
    "ECS_RESERVED_PORTS",
    "ECS_RESERVED_PORTS_UDP",
    "ECS_INSTANCE_ATTRIBUTES",
    "ECS_CONTAINER_INSTANCE_TAGS",
    "ECS_AVAILABLE_LOGGING_DRIVERS",
    "ECS_LOGLEVEL",
    "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION",
    "ECS_IMAGE_PULL_BEHAVIOR",
    "ECS_CONTAINER_STOP_TIMEOUT",
    "ECS_CONTAINER_START_TIMEOUT",
    "ECS_IMAGE_CLEANUP_INTERVAL",
    "ECS_DATADIR",
    "ECS_ENABLE_TASK_IAM_ROLE",
];

/// Where a setting came from; decides how an unknown `WHARF_` key is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    File,
    Environment,
}

impl AgentConfig {
    /// Reads the configuration: the file (if any) first, then the environment, whose
    /// values override the file's. Only `ECS_` and `WHARF_` keys are considered.
    ///
    /// As with the ECS agent, an empty value counts as unset: `ECS_CLUSTER=` in the
    /// environment leaves the file's cluster (or the default) in place.
    ///
    /// Unknown `ECS_` keys are ignored (the ECS agent has many this agent has no use
    /// for). An unknown `WHARF_` key in the file is an error. In the environment, which
    /// the agent shares with the rest of the process (the `wharf` binary reads
    /// `WHARF_LOG`, `WHARF_DATA_DIR`, …), an unknown `WHARF_` key is an error only
    /// when it is within two edits of a known key, i.e. when it looks like a typo.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<AgentConfig, ConfigError> {
        let entries = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                parse_config_text(&text, Some(path))?
            }
            None => Vec::new(),
        };
        Self::from_entries(entries, env)
    }

    /// Like [`AgentConfig::load`], with the file's text given directly.
    pub fn from_text(
        text: &str,
        env: &HashMap<String, String>,
    ) -> Result<AgentConfig, ConfigError> {
        Self::from_entries(parse_config_text(text, None)?, env)
    }

    fn from_entries(
        file_entries: Vec<(String, String)>,
        env: &HashMap<String, String>,
    ) -> Result<AgentConfig, ConfigError> {
        // Later entries win: the file's lines in order, then the environment.
        let mut merged: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in file_entries {
            check_key(&key, Origin::File)?;
            if !value.is_empty() {
                merged.insert(key, value);
            }
        }
        for (key, value) in env {
            if !(key.starts_with("ECS_") || key.starts_with("WHARF_")) {
                continue;
            }
            check_key(key, Origin::Environment)?;
            let value = value.trim();
            if !value.is_empty() {
                merged.insert(key.clone(), value.to_owned());
            }
        }

        let mut config = AgentConfig::default();
        // BTreeMap order makes the first error reported deterministic.
        for (key, value) in &merged {
            config.apply(key, value)?;
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(_), None) => Err(ConfigError::MissingPair {
                key: "WHARF_ACCESS_KEY_ID".to_owned(),
                requires: "WHARF_SECRET_ACCESS_KEY".to_owned(),
            }),
            (None, Some(_)) => Err(ConfigError::MissingPair {
                key: "WHARF_SECRET_ACCESS_KEY".to_owned(),
                requires: "WHARF_ACCESS_KEY_ID".to_owned(),
            }),
            _ => Ok(config),
        }
    }

    /// Sets one known key from its (non-empty) value; ignores keys it does not know.
    fn apply(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason,
        };
        match key {
            "ECS_CLUSTER" => self.cluster = parse_cluster(value).map_err(invalid)?,
            "ECS_BACKEND_HOST" => self.backend_host = Some(parse_endpoint(value).map_err(invalid)?),
            "ECS_RESERVED_MEMORY" => {
                self.reserved_memory_mib = value
                    .parse::<i64>()
                    .ok()
                    .filter(|mib| *mib >= 0)
                    .ok_or_else(|| {
                        invalid("expected a whole, non-negative number of MiB".to_owned())
                    })?
            }
            "ECS_RESERVED_PORTS" => self.reserved_ports = parse_ports(value).map_err(invalid)?,
            "ECS_RESERVED_PORTS_UDP" => {
                self.reserved_ports_udp = parse_ports(value).map_err(invalid)?
            }
            "ECS_INSTANCE_ATTRIBUTES" => {
                self.instance_attributes = parse_string_map(value).map_err(invalid)?
            }
            "ECS_CONTAINER_INSTANCE_TAGS" => {
                self.container_instance_tags = parse_string_map(value).map_err(invalid)?
            }
            "ECS_AVAILABLE_LOGGING_DRIVERS" => {
                self.available_logging_drivers = parse_drivers(value).map_err(invalid)?
            }
            "ECS_LOGLEVEL" => {
                self.log_level = match value.to_ascii_lowercase().as_str() {
                    "crit" => LogLevel::Crit,
                    "error" => LogLevel::Error,
                    "warn" => LogLevel::Warn,
                    "info" => LogLevel::Info,
                    "debug" => LogLevel::Debug,
                    _ => {
                        return Err(invalid(
                            "expected one of crit, error, warn, info, debug".to_owned(),
                        ))
                    }
                }
            }
            "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION" => {
                self.task_cleanup_wait = parse_duration_value(value).map_err(invalid)?
            }
            "ECS_IMAGE_PULL_BEHAVIOR" => {
                self.image_pull_behavior = match value.to_ascii_lowercase().as_str() {
                    "default" => ImagePullBehavior::Default,
                    "always" => ImagePullBehavior::Always,
                    "once" => ImagePullBehavior::Once,
                    "prefer-cached" => ImagePullBehavior::PreferCached,
                    _ => {
                        return Err(invalid(
                            "expected one of default, always, once, prefer-cached".to_owned(),
                        ))
                    }
                }
            }
            "ECS_CONTAINER_STOP_TIMEOUT" => {
                self.container_stop_timeout = parse_duration_value(value).map_err(invalid)?
            }
            "ECS_CONTAINER_START_TIMEOUT" => {
                self.container_start_timeout = parse_duration_value(value).map_err(invalid)?
            }
            "ECS_IMAGE_CLEANUP_INTERVAL" => {
                self.image_cleanup_interval = parse_duration_value(value).map_err(invalid)?
            }
            "ECS_DATADIR" => {
                let path = PathBuf::from(value);
                if !path.is_absolute() {
                    return Err(invalid("expected an absolute path".to_owned()));
                }
                self.data_dir = path;
            }
            "ECS_ENABLE_TASK_IAM_ROLE" => {
                self.enable_task_iam_role = parse_go_bool(value).map_err(invalid)?
            }
            "WHARF_AVAILABILITY_ZONE" => {
                self.availability_zone = Some(parse_plain_name(value).map_err(invalid)?)
            }
            "WHARF_INSTANCE_TYPE" => {
                self.instance_type = Some(parse_plain_name(value).map_err(invalid)?)
            }
            "WHARF_ACCESS_KEY_ID" => {
                self.access_key_id = Some(parse_plain_name(value).map_err(invalid)?)
            }
            // Any string is a possible secret; it is never echoed in an error.
            "WHARF_SECRET_ACCESS_KEY" => self.secret_access_key = Some(Secret::new(value)),
            "WHARF_REGION" => self.region = parse_region(value).map_err(invalid)?,
            "WHARF_METADATA_ADDR" => {
                self.metadata_addr = Some(value.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        "expected an address and port, e.g. 172.17.0.1:51679 or [fd00::1]:51679"
                            .to_owned(),
                    )
                })?)
            }
            _ => {}
        }
        Ok(())
    }
}

/// Refuses a `WHARF_` key the agent does not know (see [`AgentConfig::load`]).
fn check_key(key: &str, origin: Origin) -> Result<(), ConfigError> {
    if key.starts_with("ECS_") && !ECS_KEYS.contains(&key) {
        tracing::debug!(
            key,
            "ignoring an ECS agent setting Wharf's agent does not use"
        );
    }
    if !key.starts_with("WHARF_") || WHARF_KEYS.contains(&key) {
        return Ok(());
    }
    let nearest = WHARF_KEYS
        .iter()
        .map(|known| (edit_distance(key, known), *known))
        .min()
        .filter(|(distance, _)| *distance <= 2);
    match (origin, nearest) {
        (Origin::Environment, None) => Ok(()),
        (_, nearest) => Err(ConfigError::UnknownKey {
            key: key.to_owned(),
            suggestion: nearest.map(|(_, known)| known.to_owned()),
        }),
    }
}

/// Levenshtein distance, for "did you mean" suggestions between short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// Splits the file's text into `(key, value)` pairs, in order.
///
/// The format is the one Docker's `--env-file` and systemd's `EnvironmentFile` read,
/// which is how the ECS agent gets it: `KEY=VALUE` per line, `#` comment lines, blank
/// lines. Tolerated beyond that, because hand-written files have them: an `export `
/// prefix, spaces around `=`, and one pair of matching quotes around the value. A `#`
/// after a value is part of the value (JSON values may contain one).
fn parse_config_text(
    text: &str,
    path: Option<&Path>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let syntax = |line: usize, reason: String| ConfigError::Syntax {
        path: path.map(Path::to_path_buf),
        line,
        reason,
    };
    let mut entries = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with(char::is_whitespace) => rest.trim_start(),
            _ => line,
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(syntax(
                line_number,
                format!("expected KEY=VALUE, found {line:?}"),
            ));
        };
        let key = key.trim();
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(syntax(line_number, format!("{key:?} is not a valid key")));
        }
        entries.push((key.to_owned(), unquote(value.trim()).to_owned()));
    }
    Ok(entries)
}

/// Removes one pair of matching surrounding quotes, if there is one.
fn unquote(value: &str) -> &str {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return &value[1..value.len() - 1];
        }
    }
    value
}

fn parse_cluster(value: &str) -> Result<String, String> {
    let is_name = value.len() <= 255
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if is_name || value.starts_with("arn:") {
        Ok(value.to_owned())
    } else {
        Err("expected a cluster name (up to 255 letters, digits, hyphens and underscores) or a cluster ARN".to_owned())
    }
}

fn parse_endpoint(value: &str) -> Result<String, String> {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => ("https", value),
    };
    if scheme != "http" && scheme != "https" {
        return Err("expected an http:// or https:// URL, or a host name".to_owned());
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("expected a URL with a host, e.g. https://wharf.example.com:8080".to_owned());
    }
    Ok(format!("{scheme}://{}", rest.trim_end_matches('/')))
}

fn parse_ports(value: &str) -> Result<Vec<u16>, String> {
    serde_json::from_str::<Vec<u16>>(value)
        .map_err(|e| format!("expected a JSON list of port numbers 0-65535, e.g. [22, 2375]: {e}"))
}

fn parse_string_map(value: &str) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_str::<BTreeMap<String, String>>(value).map_err(|e| {
        format!("expected a JSON object of strings, e.g. {{\"stack\": \"prod\"}}: {e}")
    })
}

fn parse_drivers(value: &str) -> Result<Vec<String>, String> {
    let drivers = serde_json::from_str::<Vec<String>>(value).map_err(|e| {
        format!("expected a JSON list of driver names, e.g. [\"json-file\", \"awslogs\"]: {e}")
    })?;
    if drivers.iter().any(|d| d.trim().is_empty()) {
        return Err("a driver name is empty".to_owned());
    }
    Ok(drivers)
}

fn parse_duration_value(value: &str) -> Result<Duration, String> {
    parse_go_duration(value)
        .map_err(|e| format!("{e}; expected a duration such as 30s, 1m30s, 3h or 500ms"))
}

/// Go's `strconv.ParseBool`, which is what the ECS agent accepts.
fn parse_go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("expected true or false".to_owned()),
    }
}

fn parse_plain_name(value: &str) -> Result<String, String> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err("must not contain whitespace".to_owned())
    } else {
        Ok(value.to_owned())
    }
}

fn parse_region(value: &str) -> Result<String, String> {
    if value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Ok(value.to_owned())
    } else {
        Err("expected a region name such as us-east-1".to_owned())
    }
}

/// Why a Go duration string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    /// Nothing to parse.
    #[error("empty duration")]
    Empty,
    /// A negative duration, which no setting accepts.
    #[error("negative duration")]
    Negative,
    /// A number without a unit (only a bare `0` may have none).
    #[error("missing unit in duration")]
    MissingUnit,
    /// A unit other than ns, us, µs, ms, s, m, h.
    #[error("unknown unit {0:?} in duration (use ns, us, ms, s, m or h)")]
    UnknownUnit(String),
    /// Not a sequence of number-unit pairs.
    #[error("invalid duration")]
    Invalid,
    /// More than Go can represent (about 292 years).
    #[error("duration out of range")]
    Overflow,
}

/// The largest duration Go represents: `i64::MAX` nanoseconds.
const GO_DURATION_MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a duration in Go's `time.ParseDuration` syntax — `300ms`, `1.5h`,
/// `2h45m`, a bare `0` — as the ECS agent's duration settings are written.
///
/// Differences from Go, both deliberate: negative durations are refused (no setting
/// can use one; `-0s` is accepted as zero, as in Go), and fractions are computed in
/// exact integer arithmetic rather than floating point, so `1.1s` is exactly 1.1
/// seconds. Digits of a fraction beyond the 20th are ignored.
pub fn parse_go_duration(text: &str) -> Result<Duration, GoDurationError> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(if text.is_empty() {
            GoDurationError::Empty
        } else {
            GoDurationError::Invalid
        });
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        // The whole part.
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut whole: u128 = 0;
        for digit in rest[..whole_len].bytes() {
            whole = whole * 10 + u128::from(digit - b'0');
            if whole > GO_DURATION_MAX_NANOS {
                return Err(GoDurationError::Overflow);
            }
        }
        rest = &rest[whole_len..];

        // The fraction, kept as numerator / scale.
        let mut numerator: u128 = 0;
        let mut scale: u128 = 1;
        let mut fraction_len = 0;
        if let Some(after_point) = rest.strip_prefix('.') {
            fraction_len = after_point.bytes().take_while(u8::is_ascii_digit).count();
            for digit in after_point[..fraction_len].bytes() {
                if scale < 10u128.pow(20) {
                    numerator = numerator * 10 + u128::from(digit - b'0');
                    scale *= 10;
                }
            }
            rest = &after_point[fraction_len..];
        }
        if whole_len == 0 && fraction_len == 0 {
            return Err(GoDurationError::Invalid);
        }

        // The unit: everything up to the next number.
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_nanos: u128 = match unit {
            "" => return Err(GoDurationError::MissingUnit),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            other => return Err(GoDurationError::UnknownUnit(other.to_owned())),
        };
        // `whole` is at most 2^63 and `unit_nanos` below 2^42, so this cannot overflow
        // u128; nor can `numerator * unit_nanos` (below 10^20 * 2^42).
        total += whole * unit_nanos + numerator * unit_nanos / scale;
        if total > GO_DURATION_MAX_NANOS {
            return Err(GoDurationError::Overflow);
        }
    }
    if negative && total != 0 {
        return Err(GoDurationError::Negative);
    }
    Ok(Duration::from_nanos(total as u64))
}

/// Writes a duration as Go's `Duration.String` does (`1h30m0s`, `1.5s`, `500ms`,
/// `0s`), which [`parse_go_duration`] reads back to the same value. Durations past
/// Go's range (about 292 years) are written all the same, but do not parse back.
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}\u{b5}s", with_fraction(nanos / 1_000, nanos % 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!(
            "{}ms",
            with_fraction(nanos / 1_000_000, nanos % 1_000_000, 6)
        );
    }
    let seconds = with_fraction((nanos / 1_000_000_000) % 60, nanos % 1_000_000_000, 9);
    let minutes = (nanos / 60_000_000_000) % 60;
    let hours = nanos / 3_600_000_000_000;
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `whole.fraction` with the fraction's trailing zeros (and a bare point) removed.
fn with_fraction(whole: u128, fraction: u128, digits: usize) -> String {
    if fraction == 0 {
        return whole.to_string();
    }
    let fraction = format!("{fraction:0digits$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn from_env(key: &str, value: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::load(None, &env(&[(key, value)]))
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_ecs_agent() {
        let config = AgentConfig::load(None, &HashMap::new()).unwrap();
        assert_eq!(config, AgentConfig::default());
        assert_eq!(config.cluster, "default");
        assert_eq!(config.reserved_ports, vec![22, 2375, 2376, 51678, 51679]);
        assert!(config.reserved_ports_udp.is_empty());
        assert_eq!(config.available_logging_drivers, vec!["json-file", "none"]);
        assert_eq!(config.task_cleanup_wait, Duration::from_secs(3 * 3600));
        assert_eq!(config.container_stop_timeout, Duration::from_secs(30));
        assert_eq!(config.container_start_timeout, Duration::from_secs(180));
        assert_eq!(config.image_cleanup_interval, Duration::from_secs(1800));
        assert_eq!(config.data_dir, Path::new("/var/lib/ecs/data"));
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!(config.image_pull_behavior, ImagePullBehavior::Default);
        assert!(!config.enable_task_iam_role);
        assert_eq!(config.metadata_addr, None);
        assert!(config.reserved_ports.contains(&DEFAULT_METADATA_PORT));
    }

    #[test]
    fn every_key_parses_into_its_field() {
        let d = AgentConfig::default;
        let cases: Vec<(&str, &str, AgentConfig)> = vec![
            (
                "ECS_CLUSTER",
                "prod",
                AgentConfig {
                    cluster: "prod".into(),
                    ..d()
                },
            ),
            (
                "ECS_CLUSTER",
                "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
                AgentConfig {
                    cluster: "arn:aws:ecs:us-east-1:123456789012:cluster/prod".into(),
                    ..d()
                },
            ),
            (
                "ECS_BACKEND_HOST",
                "http://10.0.0.5:8080/",
                AgentConfig {
                    backend_host: Some("http://10.0.0.5:8080".into()),
                    ..d()
                },
            ),
            (
                "ECS_BACKEND_HOST",
                "wharf.example.com",
                AgentConfig {
                    backend_host: Some("https://wharf.example.com".into()),
                    ..d()
                },
            ),
            (
                "ECS_RESERVED_MEMORY",
                "512",
                AgentConfig {
                    reserved_memory_mib: 512,
                    ..d()
                },
            ),
            (
                "ECS_RESERVED_PORTS",
                "[22, 80]",
                AgentConfig {
                    reserved_ports: vec![22, 80],
                    ..d()
                },
            ),
            (
                "ECS_RESERVED_PORTS",
                "[]",
                AgentConfig {
                    reserved_ports: vec![],
                    ..d()
                },
            ),
            (
                "ECS_RESERVED_PORTS_UDP",
                "[53,65535]",
                AgentConfig {
                    reserved_ports_udp: vec![53, 65535],
                    ..d()
                },
            ),
            (
                "ECS_INSTANCE_ATTRIBUTES",
                r#"{"stack": "prod", "gpu": "none"}"#,
                AgentConfig {
                    instance_attributes: map(&[("stack", "prod"), ("gpu", "none")]),
                    ..d()
                },
            ),
            (
                "ECS_CONTAINER_INSTANCE_TAGS",
                r#"{"team":"a"}"#,
                AgentConfig {
                    container_instance_tags: map(&[("team", "a")]),
                    ..d()
                },
            ),
            (
                "ECS_AVAILABLE_LOGGING_DRIVERS",
                r#"["json-file","awslogs"]"#,
                AgentConfig {
                    available_logging_drivers: vec!["json-file".into(), "awslogs".into()],
                    ..d()
                },
            ),
            (
                "ECS_LOGLEVEL",
                "crit",
                AgentConfig {
                    log_level: LogLevel::Crit,
                    ..d()
                },
            ),
            (
                "ECS_LOGLEVEL",
                "error",
                AgentConfig {
                    log_level: LogLevel::Error,
                    ..d()
                },
            ),
            (
                "ECS_LOGLEVEL",
                "warn",
                AgentConfig {
                    log_level: LogLevel::Warn,
                    ..d()
                },
            ),
            (
                "ECS_LOGLEVEL",
                "info",
                AgentConfig {
                    log_level: LogLevel::Info,
                    ..d()
                },
            ),
            (
                "ECS_LOGLEVEL",
                "DEBUG",
                AgentConfig {
                    log_level: LogLevel::Debug,
                    ..d()
                },
            ),
            (
                "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION",
                "1h30m",
                AgentConfig {
                    task_cleanup_wait: Duration::from_secs(5400),
                    ..d()
                },
            ),
            (
                "ECS_IMAGE_PULL_BEHAVIOR",
                "default",
                AgentConfig {
                    image_pull_behavior: ImagePullBehavior::Default,
                    ..d()
                },
            ),
            (
                "ECS_IMAGE_PULL_BEHAVIOR",
                "always",
                AgentConfig {
                    image_pull_behavior: ImagePullBehavior::Always,
                    ..d()
                },
            ),
            (
                "ECS_IMAGE_PULL_BEHAVIOR",
                "once",
                AgentConfig {
                    image_pull_behavior: ImagePullBehavior::Once,
                    ..d()
                },
            ),
            (
                "ECS_IMAGE_PULL_BEHAVIOR",
                "prefer-cached",
                AgentConfig {
                    image_pull_behavior: ImagePullBehavior::PreferCached,
                    ..d()
                },
            ),
            (
                "ECS_CONTAINER_STOP_TIMEOUT",
                "2m",
                AgentConfig {
                    container_stop_timeout: Duration::from_secs(120),
                    ..d()
                },
            ),
            (
                "ECS_CONTAINER_START_TIMEOUT",
                "500ms",
                AgentConfig {
                    container_start_timeout: Duration::from_millis(500),
                    ..d()
                },
            ),
            (
                "ECS_IMAGE_CLEANUP_INTERVAL",
                "1h",
                AgentConfig {
                    image_cleanup_interval: Duration::from_secs(3600),
                    ..d()
                },
            ),
            (
                "ECS_DATADIR",
                "/data/ecs",
                AgentConfig {
                    data_dir: "/data/ecs".into(),
                    ..d()
                },
            ),
            (
                "ECS_ENABLE_TASK_IAM_ROLE",
                "true",
                AgentConfig {
                    enable_task_iam_role: true,
                    ..d()
                },
            ),
            (
                "ECS_ENABLE_TASK_IAM_ROLE",
                "1",
                AgentConfig {
                    enable_task_iam_role: true,
                    ..d()
                },
            ),
            (
                "ECS_ENABLE_TASK_IAM_ROLE",
                "False",
                AgentConfig {
                    enable_task_iam_role: false,
                    ..d()
                },
            ),
            (
                "WHARF_AVAILABILITY_ZONE",
                "us-east-1b",
                AgentConfig {
                    availability_zone: Some("us-east-1b".into()),
                    ..d()
                },
            ),
            (
                "WHARF_INSTANCE_TYPE",
                "m5.large",
                AgentConfig {
                    instance_type: Some("m5.large".into()),
                    ..d()
                },
            ),
            (
                "WHARF_REGION",
                "eu-west-3",
                AgentConfig {
                    region: "eu-west-3".into(),
                    ..d()
                },
            ),
            (
                "WHARF_METADATA_ADDR",
                "172.17.0.1:51679",
                AgentConfig {
                    metadata_addr: Some("172.17.0.1:51679".parse().unwrap()),
                    ..d()
                },
            ),
            (
                "WHARF_METADATA_ADDR",
                "[fd00::1]:8080",
                AgentConfig {
                    metadata_addr: Some("[fd00::1]:8080".parse().unwrap()),
                    ..d()
                },
            ),
            // Keys the ECS agent has and this agent does not use are ignored.
            ("ECS_ENABLE_SPOT_INSTANCE_DRAINING", "true", d()),
            ("ECS_NO_SUCH_THING", "{not json", d()),
            // An empty value is unset.
            ("ECS_CLUSTER", "", d()),
            ("ECS_RESERVED_PORTS", "", d()),
        ];
        for (key, value, expected) in cases {
            // From the environment and from the file, with the same result.
            let from_environment =
                from_env(key, value).unwrap_or_else(|e| panic!("{key}={value}: {e}"));
            assert_eq!(
                from_environment, expected,
                "{key}={value} from the environment"
            );
            let from_file = AgentConfig::from_text(&format!("{key}={value}\n"), &HashMap::new())
                .unwrap_or_else(|e| panic!("{key}={value}: {e}"));
            assert_eq!(from_file, expected, "{key}={value} from the file");
        }
    }

    #[test]
    fn credentials_come_as_a_pair_and_the_secret_is_never_printed() {
        let config = AgentConfig::load(
            None,
            &env(&[
                ("WHARF_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("WHARF_SECRET_ACCESS_KEY", "wJalr/sEcReT"),
            ]),
        )
        .unwrap();
        assert_eq!(config.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(
            config.secret_access_key.as_ref().map(Secret::expose),
            Some("wJalr/sEcReT")
        );
        assert!(!format!("{config:?}").contains("sEcReT"));

        for (key, requires) in [
            ("WHARF_ACCESS_KEY_ID", "WHARF_SECRET_ACCESS_KEY"),
            ("WHARF_SECRET_ACCESS_KEY", "WHARF_ACCESS_KEY_ID"),
        ] {
            match from_env(key, "x") {
                Err(ConfigError::MissingPair {
                    key: k,
                    requires: r,
                }) => assert_eq!((k.as_str(), r.as_str()), (key, requires)),
                other => panic!("{key} alone: {other:?}"),
            }
        }
    }

    #[test]
    fn each_bad_value_is_an_error_naming_key_and_value() {
        let cases = [
            ("ECS_CLUSTER", "has space"),
            ("ECS_CLUSTER", "slash/name"),
            ("ECS_BACKEND_HOST", "ftp://host"),
            ("ECS_BACKEND_HOST", "http://"),
            ("ECS_RESERVED_MEMORY", "-1"),
            ("ECS_RESERVED_MEMORY", "512MiB"),
            ("ECS_RESERVED_MEMORY", "1.5"),
            ("ECS_RESERVED_PORTS", "22,80"),
            ("ECS_RESERVED_PORTS", "[70000]"),
            ("ECS_RESERVED_PORTS", "[-1]"),
            ("ECS_RESERVED_PORTS", r#"["22"]"#),
            ("ECS_RESERVED_PORTS_UDP", "{}"),
            ("ECS_INSTANCE_ATTRIBUTES", r#"{"n": 1}"#),
            ("ECS_INSTANCE_ATTRIBUTES", "[]"),
            ("ECS_CONTAINER_INSTANCE_TAGS", "team=a"),
            ("ECS_AVAILABLE_LOGGING_DRIVERS", "json-file"),
            ("ECS_AVAILABLE_LOGGING_DRIVERS", r#"[""]"#),
            ("ECS_LOGLEVEL", "verbose"),
            ("ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION", "3"),
            ("ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION", "3 hours"),
            ("ECS_IMAGE_PULL_BEHAVIOR", "never"),
            ("ECS_CONTAINER_STOP_TIMEOUT", "-30s"),
            ("ECS_CONTAINER_START_TIMEOUT", "3d"),
            ("ECS_IMAGE_CLEANUP_INTERVAL", "1e3s"),
            ("ECS_DATADIR", "relative/dir"),
            ("ECS_ENABLE_TASK_IAM_ROLE", "yes"),
            ("WHARF_AVAILABILITY_ZONE", "us east"),
            ("WHARF_INSTANCE_TYPE", "m5 large"),
            ("WHARF_REGION", "US_EAST"),
            ("WHARF_METADATA_ADDR", "172.17.0.1"),
            ("WHARF_METADATA_ADDR", "localhost:51679"),
        ];
        for (key, value) in cases {
            match from_env(key, value) {
                Err(error @ ConfigError::InvalidValue { .. }) => {
                    let ConfigError::InvalidValue {
                        key: k,
                        value: v,
                        reason,
                    } = &error
                    else {
                        unreachable!()
                    };
                    assert_eq!((k.as_str(), v.as_str()), (key, value));
                    assert!(!reason.is_empty());
                    let message = error.to_string();
                    assert!(
                        message.contains(key) && message.contains(&format!("{value:?}")),
                        "{message}"
                    );
                }
                other => panic!("{key}={value}: expected InvalidValue, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ecs.config");
        std::fs::write(
            &path,
            "# written by user data\n\nECS_CLUSTER=from-file\nexport ECS_RESERVED_MEMORY=256\nECS_LOGLEVEL=\"debug\"\n\
             ECS_INSTANCE_ATTRIBUTES='{\"stack\": \"prod # not a comment\"}'\n  ECS_DATADIR = /srv/ecs  \n",
        )
        .unwrap();
        let config = AgentConfig::load(
            Some(&path),
            &env(&[
                ("ECS_CLUSTER", "from-env"),
                ("ECS_DATADIR", ""),
                ("PATH", "/usr/bin"),
                ("WHARF_LOG", "debug"),
            ]),
        )
        .unwrap();
        assert_eq!(config.cluster, "from-env");
        assert_eq!(config.reserved_memory_mib, 256);
        assert_eq!(config.log_level, LogLevel::Debug);
        assert_eq!(
            config.instance_attributes,
            map(&[("stack", "prod # not a comment")])
        );
        // An empty environment value does not clear the file's.
        assert_eq!(config.data_dir, Path::new("/srv/ecs"));
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.config");
        match AgentConfig::load(Some(&path), &HashMap::new()) {
            Err(error @ ConfigError::Read { .. }) => {
                assert!(error.to_string().contains("absent.config"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_malformed_line_is_a_syntax_error_with_its_number() {
        for (text, line) in [
            ("ECS_CLUSTER=a\nnot a pair\n", 2),
            ("# c\n\n=value\n", 3),
            ("ECS CLUSTER=a\n", 1),
            ("1KEY=a\n", 1),
        ] {
            match AgentConfig::from_text(text, &HashMap::new()) {
                Err(ConfigError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn quotes_are_removed_only_in_matching_pairs() {
        assert_eq!(unquote("\"a\""), "a");
        assert_eq!(unquote("'a'"), "a");
        assert_eq!(unquote("\"a'"), "\"a'");
        assert_eq!(unquote("\""), "\"");
        assert_eq!(unquote("\"\""), "");
    }

    #[test]
    fn unknown_wharf_keys_are_errors_in_the_file_and_near_misses_in_the_environment() {
        match AgentConfig::from_text("WHARF_REGOIN=us-east-2\n", &HashMap::new()) {
            Err(ConfigError::UnknownKey { key, suggestion }) => {
                assert_eq!(key, "WHARF_REGOIN");
                assert_eq!(suggestion.as_deref(), Some("WHARF_REGION"));
            }
            other => panic!("{other:?}"),
        }
        match AgentConfig::from_text("WHARF_COLOUR=blue\n", &HashMap::new()) {
            Err(ConfigError::UnknownKey {
                suggestion: None, ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // The environment is shared with the rest of the wharf binary.
        assert!(AgentConfig::load(
            None,
            &env(&[("WHARF_DATA_DIR", "/x"), ("WHARF_API_ADDR", "0:1")])
        )
        .is_ok());
        match from_env("WHARF_METADATA_ADR", "1.2.3.4:5") {
            Err(ConfigError::UnknownKey { suggestion, .. }) => {
                assert_eq!(suggestion.as_deref(), Some("WHARF_METADATA_ADDR"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_known_key_is_applied() {
        // Guards the key lists against drifting from `apply`: a listed key with a
        // value that is invalid for it must be reported, so it is not ignored.
        for key in ECS_KEYS
            .iter()
            .chain(WHARF_KEYS)
            .filter(|k| **k != "WHARF_SECRET_ACCESS_KEY")
        {
            assert!(
                from_env(key, "\u{1}bad value\u{1}").is_err(),
                "{key} is ignored"
            );
        }
    }

    #[test]
    fn go_durations_parse_as_go_does() {
        let ms = Duration::from_millis;
        let cases = [
            ("0", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            ("3h", Duration::from_secs(3 * 3600)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", ms(500)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", ms(500)),
            ("1.s", Duration::from_secs(1)),
            ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
            ("1h0m0s", Duration::from_secs(3600)),
            ("1.1s", ms(1100)),
            ("10us", Duration::from_micros(10)),
            ("10\u{b5}s", Duration::from_micros(10)),
            ("10\u{3bc}s", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1.000000001s", Duration::from_nanos(1_000_000_001)),
            ("0.1234567891234ms", Duration::from_nanos(123_456)),
            (
                "9223372036854775807ns",
                Duration::from_nanos(i64::MAX as u64),
            ),
            (
                "2562047h47m16.854775807s",
                Duration::from_nanos(i64::MAX as u64),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
        }
        let errors = [
            ("", GoDurationError::Empty),
            ("-", GoDurationError::Invalid),
            ("3", GoDurationError::MissingUnit),
            ("1h30", GoDurationError::MissingUnit),
            ("3d", GoDurationError::UnknownUnit("d".into())),
            ("1h 30m", GoDurationError::UnknownUnit("h ".into())),
            ("s", GoDurationError::Invalid),
            (".s", GoDurationError::Invalid),
            ("-1s", GoDurationError::Negative),
            ("9223372036854775808ns", GoDurationError::Overflow),
            ("2562048h", GoDurationError::Overflow),
            (
                "99999999999999999999999999999999h",
                GoDurationError::Overflow,
            ),
        ];
        for (text, expected) in errors {
            assert_eq!(parse_go_duration(text), Err(expected), "{text}");
        }
    }

    #[test]
    fn go_durations_format_as_go_does() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_nanos(1_500), "1.5\u{b5}s"),
            (Duration::from_micros(1_500), "1.5ms"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3 * 3600), "3h0m0s"),
            (Duration::from_nanos(3_600_000_000_001), "1h0m0.000000001s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_go_duration(duration), text);
        }
    }

    proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in "\\PC{0,40}") {
            let _ = parse_go_duration(&text);
        }

        #[test]
        fn parsing_duration_like_text_never_panics(text in "[-+]?([0-9]{0,22}(\\.[0-9]{0,25})?(ns|us|µs|μs|ms|s|m|h|x|)){1,5}") {
            let _ = parse_go_duration(&text);
        }

        #[test]
        fn formatted_durations_parse_back(nanos in 0..=i64::MAX as u64) {
            let duration = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_go_duration(&format_go_duration(duration)), Ok(duration));
        }

        #[test]
        fn generated_unit_sums_parse_to_their_total(h in 0u64..10_000, m in 0u64..100, s in 0u64..100, ms in 0u64..1_000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let expected = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
            prop_assert_eq!(parse_go_duration(&text), Ok(expected));
        }

        #[test]
        fn loading_arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = AgentConfig::from_text(&text, &HashMap::new());
        }
    }
}
