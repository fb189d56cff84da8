//! Typed events for the well-known topics, and a checked escape hatch for any other topic.
//!
//! Each typed event carries the scope its topic needs as a struct whose required ids are plain fields, so leaving
//! one out is a compile error, not a runtime one:
//!
//! ```compile_fail
//! use publisher::events::{RunLogChunk, RunScope, ProjectId};
//! // error[E0063]: missing field `run_id` in initializer of `RunScope`
//! let scope = RunScope { project_id: ProjectId::new("p1").unwrap(), org_id: None, env: None, task_id: None };
//! ```

use std::collections::BTreeMap;

use protocol::{NewEvent, Scope, Topic};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $key:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks the value: 1–256 characters.
            pub fn new(value: impl Into<String>) -> Result<Self> {
                let value = value.into();
                if value.is_empty() || value.chars().count() > protocol::scope::MAX_SCOPE_VALUE_LEN {
                    return Err(Error::Invalid(format!(concat!($key, " must be 1-256 characters, got {:?}"), value)));
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A project's id (scope key `project_id`).
    ProjectId, "project_id");
id_type!(
    /// A run's id (scope key `run_id`).
    RunId, "run_id");
id_type!(
    /// A task's id (scope key `task_id`).
    TaskId, "task_id");
id_type!(
    /// A deploy's id (scope key `deploy_id`).
    DeployId, "deploy_id");
id_type!(
    /// An organisation's id (scope key `org_id`).
    OrgId, "org_id");
id_type!(
    /// An environment's name (scope key `env`).
    Env, "env");

/// Anything the publisher can send: it becomes a [`NewEvent`] (before redaction and validation).
pub trait Event {
    fn into_new_event(self) -> Result<NewEvent>;
}

impl Event for NewEvent {
    fn into_new_event(self) -> Result<NewEvent> {
        Ok(self)
    }
}

fn scope(pairs: &[(&str, Option<&str>)]) -> Result<Scope> {
    let map: BTreeMap<String, String> =
        pairs.iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_owned()))).collect();
    Scope::new(map).map_err(|e| Error::Invalid(e.to_string()))
}

fn topic(name: &str) -> Topic {
    // Only called with the well-known topic names of this file, which are valid.
    Topic::parse(name).expect("well-known topics are valid")
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        // Every payload below is built with `json!({...})`.
        _ => unreachable!("payloads are built as objects"),
    }
}

/// Where a run's events belong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunScope {
    pub project_id: ProjectId,
    pub run_id: RunId,
    pub org_id: Option<OrgId>,
    pub env: Option<Env>,
    pub task_id: Option<TaskId>,
}

impl RunScope {
    pub fn new(project_id: ProjectId, run_id: RunId) -> Self {
        Self { project_id, run_id, org_id: None, env: None, task_id: None }
    }

    fn scope(&self) -> Result<Scope> {
        scope(&[
            ("project_id", Some(self.project_id.as_str())),
            ("run_id", Some(self.run_id.as_str())),
            ("org_id", self.org_id.as_ref().map(OrgId::as_str)),
            ("env", self.env.as_ref().map(Env::as_str)),
            ("task_id", self.task_id.as_ref().map(TaskId::as_str)),
        ])
    }
}

/// Where a deploy's events belong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployScope {
    pub project_id: ProjectId,
    pub deploy_id: DeployId,
    pub org_id: Option<OrgId>,
    pub env: Option<Env>,
}

impl DeployScope {
    pub fn new(project_id: ProjectId, deploy_id: DeployId) -> Self {
        Self { project_id, deploy_id, org_id: None, env: None }
    }

    fn scope(&self) -> Result<Scope> {
        scope(&[
            ("project_id", Some(self.project_id.as_str())),
            ("deploy_id", Some(self.deploy_id.as_str())),
            ("org_id", self.org_id.as_ref().map(OrgId::as_str)),
            ("env", self.env.as_ref().map(Env::as_str)),
        ])
    }
}

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A deploy's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStatus {
    Pending,
    InProgress,
    Succeeded,
    Failed,
    RolledBack,
}

/// A run's status or flow event (`run.events`): payload `{"status", "step"?, "message"?, "details"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEvent {
    pub scope: RunScope,
    pub status: RunStatus,
    pub step: Option<String>,
    pub message: Option<String>,
    pub details: Map<String, Value>,
}

impl RunEvent {
    pub fn new(scope: RunScope, status: RunStatus) -> Self {
        Self { scope, status, step: None, message: None, details: Map::new() }
    }
}

impl Event for RunEvent {
    fn into_new_event(self) -> Result<NewEvent> {
        let mut payload = object(json!({"status": self.status}));
        insert_some(&mut payload, "step", self.step);
        insert_some(&mut payload, "message", self.message);
        if !self.details.is_empty() {
            payload.insert("details".into(), Value::Object(self.details));
        }
        Ok(NewEvent::new(topic("run.events"), self.scope.scope()?, payload))
    }
}

/// A deploy's status event (`deploy.events`): payload `{"status", "message"?, "details"?}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployEvent {
    pub scope: DeployScope,
    pub status: DeployStatus,
    pub message: Option<String>,
    pub details: Map<String, Value>,
}

impl DeployEvent {
    pub fn new(scope: DeployScope, status: DeployStatus) -> Self {
        Self { scope, status, message: None, details: Map::new() }
    }
}

impl Event for DeployEvent {
    fn into_new_event(self) -> Result<NewEvent> {
        let mut payload = object(json!({"status": self.status}));
        insert_some(&mut payload, "message", self.message);
        if !self.details.is_empty() {
            payload.insert("details".into(), Value::Object(self.details));
        }
        Ok(NewEvent::new(topic("deploy.events"), self.scope.scope()?, payload))
    }
}

/// One chunk of a run's log (`run.logs`): payload `{"chunk", "eos"}`, `seq` counting from 1.
/// [`crate::LogStreamWriter`] produces these from a byte stream.
#[derive(Debug, Clone, PartialEq)]
pub struct RunLogChunk {
    pub scope: RunScope,
    pub seq: u64,
    pub chunk: String,
    pub eos: bool,
}

impl Event for RunLogChunk {
    fn into_new_event(self) -> Result<NewEvent> {
        let payload = object(json!({"chunk": self.chunk, "eos": self.eos}));
        let mut event = NewEvent::new(topic("run.logs"), self.scope.scope()?, payload);
        event.seq = Some(self.seq);
        Ok(event)
    }
}

/// One chunk of a deploy's log (`deploy.logs`): payload `{"chunk", "eos"}`, `seq` counting from 1.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployLogChunk {
    pub scope: DeployScope,
    pub seq: u64,
    pub chunk: String,
    pub eos: bool,
}

impl Event for DeployLogChunk {
    fn into_new_event(self) -> Result<NewEvent> {
        let payload = object(json!({"chunk": self.chunk, "eos": self.eos}));
        let mut event = NewEvent::new(topic("deploy.logs"), self.scope.scope()?, payload);
        event.seq = Some(self.seq);
        Ok(event)
    }
}

/// A system error (`system.errors`): payload `{"source", "message", "code"?, "details"?}`; its scope is whatever
/// of organisation, project and environment it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemError {
    /// The component that failed (`scheduler`, `billing-worker`).
    pub source: String,
    pub message: String,
    pub code: Option<String>,
    pub org_id: Option<OrgId>,
    pub project_id: Option<ProjectId>,
    pub env: Option<Env>,
    pub details: Map<String, Value>,
}

impl SystemError {
    pub fn new(source: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            message: message.into(),
            code: None,
            org_id: None,
            project_id: None,
            env: None,
            details: Map::new(),
        }
    }
}

impl Event for SystemError {
    fn into_new_event(self) -> Result<NewEvent> {
        let mut payload = object(json!({"source": self.source, "message": self.message}));
        insert_some(&mut payload, "code", self.code);
        if !self.details.is_empty() {
            payload.insert("details".into(), Value::Object(self.details));
        }
        let scope = scope(&[
            ("org_id", self.org_id.as_ref().map(OrgId::as_str)),
            ("project_id", self.project_id.as_ref().map(ProjectId::as_str)),
            ("env", self.env.as_ref().map(Env::as_str)),
        ])?;
        Ok(NewEvent::new(topic("system.errors"), scope, payload))
    }
}

/// An event on any other topic (`chat:123`, `audit.feature`, …), checked when built; it is redacted and
/// validated like every other event.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomEvent(NewEvent);

impl CustomEvent {
    /// Checks the topic and scope, and that the payload serializes to a JSON object.
    pub fn new<'a>(
        topic: &str,
        scope: impl IntoIterator<Item = (&'a str, &'a str)>,
        payload: &impl Serialize,
    ) -> Result<Self> {
        let topic = Topic::parse(topic).map_err(|e| Error::Invalid(e.to_string()))?;
        let map = scope.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        let scope = Scope::new(map).map_err(|e| Error::Invalid(e.to_string()))?;
        let payload = match serde_json::to_value(payload) {
            Ok(Value::Object(map)) => map,
            Ok(other) => return Err(Error::Invalid(format!("the payload must be a JSON object, got {other}"))),
            Err(e) => return Err(Error::Invalid(format!("the payload does not serialize: {e}"))),
        };
        Ok(Self(NewEvent::new(topic, scope, payload)))
    }

    /// Sets the stream key (derived from the scope otherwise).
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.0.key = Some(key.into());
        self
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.0.correlation_id = Some(id.into());
        self
    }
}

impl Event for CustomEvent {
    fn into_new_event(self) -> Result<NewEvent> {
        Ok(self.0)
    }
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(value) = value {
        map.insert(key.into(), Value::String(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_scope() -> RunScope {
        RunScope {
            env: Some(Env::new("prod").unwrap()),
            ..RunScope::new(ProjectId::new("p1").unwrap(), RunId::new("r9").unwrap())
        }
    }

    #[test]
    fn run_events_carry_their_topic_scope_and_status() {
        let mut event = RunEvent::new(run_scope(), RunStatus::Running);
        event.step = Some("build".into());
        let new = event.into_new_event().unwrap();
        assert_eq!(new.topic.as_str(), "run.events");
        assert_eq!(new.scope.get("run_id"), Some("r9"));
        assert_eq!(new.scope.get("env"), Some("prod"));
        assert_eq!(new.effective_key().as_deref(), Some("run:r9"));
        assert_eq!(Value::Object(new.payload), json!({"status":"running","step":"build"}));
    }

    #[test]
    fn log_chunks_carry_seq_and_eos() {
        let new =
            RunLogChunk { scope: run_scope(), seq: 3, chunk: "line\n".into(), eos: true }.into_new_event().unwrap();
        assert_eq!(new.topic.as_str(), "run.logs");
        assert_eq!(new.seq, Some(3));
        assert_eq!(Value::Object(new.payload), json!({"chunk":"line\n","eos":true}));
        let deploy = DeployScope::new(ProjectId::new("p1").unwrap(), DeployId::new("d1").unwrap());
        let new = DeployLogChunk { scope: deploy, seq: 1, chunk: "x".into(), eos: false }.into_new_event().unwrap();
        assert_eq!((new.topic.as_str(), new.effective_key().as_deref()), ("deploy.logs", Some("deploy:d1")));
    }

    #[test]
    fn system_errors_and_deploy_events_build() {
        let mut error = SystemError::new("scheduler", "queue stalled");
        error.project_id = Some(ProjectId::new("p1").unwrap());
        let new = error.into_new_event().unwrap();
        assert_eq!((new.topic.as_str(), new.scope.get("project_id")), ("system.errors", Some("p1")));
        let deploy = DeployScope::new(ProjectId::new("p1").unwrap(), DeployId::new("d1").unwrap());
        let new = DeployEvent::new(deploy, DeployStatus::RolledBack).into_new_event().unwrap();
        assert_eq!(Value::Object(new.payload), json!({"status":"rolled_back"}));
    }

    #[test]
    fn custom_events_are_checked_when_built() {
        let chat =
            CustomEvent::new("chat:123", [("project_id", "p1")], &json!({"text":"hi"})).unwrap().with_key("room:123");
        assert_eq!(chat.into_new_event().unwrap().effective_key().as_deref(), Some("room:123"));
        assert!(matches!(CustomEvent::new("bad topic", [], &json!({})), Err(Error::Invalid(_))));
        assert!(matches!(CustomEvent::new("a", [("Bad", "x")], &json!({})), Err(Error::Invalid(_))));
        assert!(matches!(CustomEvent::new("a", [], &json!([1])), Err(Error::Invalid(_))));
        assert!(ProjectId::new("").is_err());
    }
}
