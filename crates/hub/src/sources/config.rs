//! The sources file (`HUB_SOURCES`): which queries to poll and how their rows become events.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::scope::is_scope_key;
use serde::Deserialize;

use super::template::Template;

/// One database source, checked: every name, template and duration is valid.
#[derive(Debug, Clone)]
pub struct Source {
    /// Unique among the file's sources; names the cursor and the lock.
    pub name: String,
    /// The PostgreSQL connection string (read from the environment variable the file names).
    pub database_url: String,
    /// A `SELECT` over the table or view; it must yield `id_column` and `time_column`.
    pub query: String,
    /// The row's identity within the source (unique; text or anything that casts to text).
    pub id_column: String,
    /// When the row was written, set by the writing transaction (`DEFAULT now()`), see `docs/SOURCES.md`.
    pub time_column: String,
    pub poll_interval: Duration,
    /// Woken early by `NOTIFY <channel>`.
    pub notify_channel: Option<String>,
    /// Most rows one poll publishes.
    pub batch: usize,
    pub topic: Template,
    pub key: Option<Template>,
    pub scope: BTreeMap<String, Template>,
    pub payload: BTreeMap<String, Template>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    source: Vec<RawSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: String,
    #[serde(default = "default_url_variable")]
    database_url_env: String,
    query: String,
    #[serde(default = "default_id_column")]
    id_column: String,
    #[serde(default = "default_time_column")]
    time_column: String,
    #[serde(default = "default_poll_interval")]
    poll_interval: String,
    notify_channel: Option<String>,
    #[serde(default = "default_batch")]
    batch: usize,
    topic: String,
    key: Option<String>,
    #[serde(default)]
    scope: BTreeMap<String, String>,
    payload: BTreeMap<String, String>,
}

fn default_url_variable() -> String {
    "DATABASE_URL".into()
}
fn default_id_column() -> String {
    "event_id".into()
}
fn default_time_column() -> String {
    "created_at".into()
}
fn default_poll_interval() -> String {
    "1s".into()
}
fn default_batch() -> usize {
    500
}

/// Reads and checks the sources file at `path`; `env` looks up the connection strings.
pub fn load(path: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Vec<Source>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("HUB_SOURCES: cannot read {path}: {e}"))?;
    parse(&text, env).map_err(|e| anyhow::anyhow!("HUB_SOURCES: {path}: {e}"))
}

pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Vec<Source>> {
    let file: File = toml::from_str(text)?;
    let mut sources: Vec<Source> = Vec::new();
    for raw in file.source {
        let name = raw.name.clone();
        let source = check(raw, &env).map_err(|e| anyhow::anyhow!("source {name:?}: {e}"))?;
        anyhow::ensure!(!sources.iter().any(|s| s.name == source.name), "two sources are named {name:?}");
        sources.push(source);
    }
    Ok(sources)
}

fn check(raw: RawSource, env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Source> {
    anyhow::ensure!(
        !raw.name.is_empty()
            && raw.name.len() <= 64
            && raw.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "name must be 1-64 characters of [A-Za-z0-9_-]"
    );
    let database_url = env(&raw.database_url_env)
        .ok_or_else(|| anyhow::anyhow!("{} is not set (database_url_env)", raw.database_url_env))?;
    for (what, column) in [("id_column", &raw.id_column), ("time_column", &raw.time_column)] {
        anyhow::ensure!(is_identifier(column), "{what} {column:?} must be a lower-case SQL identifier");
    }
    if let Some(channel) = &raw.notify_channel {
        anyhow::ensure!(is_identifier(channel), "notify_channel {channel:?} must be a lower-case SQL identifier");
    }
    anyhow::ensure!((1..=5000).contains(&raw.batch), "batch must be 1-5000");
    let poll_interval = humantime::parse_duration(&raw.poll_interval)
        .map_err(|e| anyhow::anyhow!("poll_interval {:?}: {e}", raw.poll_interval))?;
    anyhow::ensure!(poll_interval >= Duration::from_millis(10), "poll_interval must be at least 10ms");
    let template = |text: &str| Template::parse(text).map_err(anyhow::Error::from);
    let mut scope = BTreeMap::new();
    for (key, text) in &raw.scope {
        anyhow::ensure!(is_scope_key(key), "scope key {key:?} must be 1-32 characters of [a-z_]");
        scope.insert(key.clone(), template(text)?);
    }
    let mut payload = BTreeMap::new();
    for (key, text) in &raw.payload {
        payload.insert(key.clone(), template(text)?);
    }
    anyhow::ensure!(!payload.is_empty(), "payload must map at least one field");
    Ok(Source {
        name: raw.name,
        database_url,
        query: raw.query,
        id_column: raw.id_column,
        time_column: raw.time_column,
        poll_interval,
        notify_channel: raw.notify_channel,
        batch: raw.batch,
        topic: template(&raw.topic)?,
        key: raw.key.as_deref().map(template).transpose()?,
        scope,
        payload,
    })
}

fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../../examples/feature-flags/sources.toml");

    fn env(name: &str) -> Option<String> {
        (name == "DATABASE_URL").then(|| "postgres://localhost/flags".to_owned())
    }

    #[test]
    fn the_shipped_example_parses() {
        let sources = parse(EXAMPLE, env).unwrap();
        assert_eq!(sources.len(), 1);
        let flags = &sources[0];
        assert_eq!(flags.name, "feature-flags");
        assert_eq!(flags.database_url, "postgres://localhost/flags");
        assert_eq!(flags.notify_channel.as_deref(), Some("realtime_sources"));
        assert_eq!(flags.scope.keys().collect::<Vec<_>>(), vec!["env", "project_id"]);
    }

    #[test]
    fn mistakes_are_refused_with_the_source_and_the_reason() {
        let base = r#"name = "s"
query = "SELECT 1"
topic = "t"
payload = { a = "{a}" }
"#;
        let cases = [
            ("poll_interval = \"soon\"\n", "poll_interval"),
            ("id_column = \"Event Id\"\n", "id_column"),
            ("scope = { Project = \"{p}\" }\n", "scope key"),
            ("database_url_env = \"NOPE\"\n", "NOPE is not set"),
            ("colour = \"blue\"\n", "unknown field"),
            ("batch = 0\n", "batch"),
        ];
        for (extra, says) in cases {
            let text = format!("[[source]]\n{extra}{base}");
            let error = format!("{:#}", parse(&text, env).unwrap_err());
            assert!(error.contains(says), "{extra}: {error}");
        }
        let twice = format!("[[source]]\n{base}[[source]]\n{base}");
        assert!(format!("{:#}", parse(&twice, env).unwrap_err()).contains("two sources"));
    }
}
