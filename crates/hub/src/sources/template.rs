//! Templates that map a source row's columns to an event's topic, scope and payload: `"{column}"`,
//! `"{entity}_{action}"`, `"{created_at|utc}"`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

/// A parsed template: text and column references, each with an optional filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Column { name: String, filter: Option<Filter> },
}

/// What a column's value goes through before it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// A timestamp (any RFC 3339 offset) as UTC with a `Z`: `2025-09-26T12:00:00Z`.
    Utc,
}

/// Why a template or a row did not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| TemplateError(format!("template {text:?} has a '{{' without its '}}'")))?;
            let inner = &rest[open + 1..open + close];
            let (name, filter) = match inner.split_once('|') {
                Some((name, "utc")) => (name, Some(Filter::Utc)),
                Some((_, other)) => {
                    return Err(TemplateError(format!("template {text:?}: unknown filter {other:?} (known: utc)")));
                }
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(TemplateError(format!("template {text:?}: {name:?} is not a column name")));
            }
            parts.push(Part::Column { name: name.to_owned(), filter });
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The columns the template reads.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column { name, .. } => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The template applied to `row` as text. A missing column is an error; a null one is the empty string.
    pub fn render(&self, row: &Map<String, Value>) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Column { name, filter } => out.push_str(&column_text(row, name, *filter)?),
            }
        }
        Ok(out)
    }

    /// The template applied to `row` as a JSON value: a template that is exactly one unfiltered column keeps the
    /// column's JSON type (numbers, booleans, null); anything else is a string.
    pub fn render_value(&self, row: &Map<String, Value>) -> Result<Value, TemplateError> {
        if let [Part::Column { name, filter: None }] = self.parts.as_slice() {
            return row.get(name).cloned().ok_or_else(|| missing(name));
        }
        self.render(row).map(Value::String)
    }
}

fn missing(name: &str) -> TemplateError {
    TemplateError(format!("the row has no column {name:?}"))
}

fn column_text(row: &Map<String, Value>, name: &str, filter: Option<Filter>) -> Result<String, TemplateError> {
    let value = row.get(name).ok_or_else(|| missing(name))?;
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match filter {
        None => Ok(text),
        Some(Filter::Utc) => DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::AutoSi, true))
            .map_err(|e| TemplateError(format!("column {name:?} is not a timestamp ({text:?}): {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn row() -> Map<String, Value> {
        json!({"entity":"feature","action":"updated","created_at":"2025-09-26T14:00:00+02:00","n":3,"gone":null})
            .as_object()
            .cloned()
            .unwrap()
    }

    #[test]
    fn columns_and_text_are_joined() {
        let t = Template::parse("{entity}_{action}").unwrap();
        assert_eq!(t.render(&row()).unwrap(), "feature_updated");
        assert_eq!(t.columns().collect::<Vec<_>>(), vec!["entity", "action"]);
        assert_eq!(Template::parse("flags.audit").unwrap().render(&row()).unwrap(), "flags.audit");
    }

    #[test]
    fn utc_writes_timestamps_in_utc_with_a_z() {
        let t = Template::parse("{created_at|utc}").unwrap();
        assert_eq!(t.render(&row()).unwrap(), "2025-09-26T12:00:00Z");
        let fraction = json!({"t":"2025-09-26T12:00:00.250+00:00"}).as_object().cloned().unwrap();
        assert_eq!(Template::parse("{t|utc}").unwrap().render(&fraction).unwrap(), "2025-09-26T12:00:00.250Z");
    }

    #[test]
    fn a_lone_column_keeps_its_json_type() {
        assert_eq!(Template::parse("{n}").unwrap().render_value(&row()).unwrap(), json!(3));
        assert_eq!(Template::parse("{gone}").unwrap().render_value(&row()).unwrap(), Value::Null);
        assert_eq!(Template::parse("#{n}").unwrap().render_value(&row()).unwrap(), json!("#3"));
    }

    #[test]
    fn bad_templates_and_missing_columns_say_what_is_wrong() {
        assert!(Template::parse("{entity").unwrap_err().0.contains("without"));
        assert!(Template::parse("{a b}").unwrap_err().0.contains("not a column"));
        assert!(Template::parse("{a|upper}").unwrap_err().0.contains("unknown filter"));
        assert!(Template::parse("{nope}").unwrap().render(&row()).unwrap_err().0.contains("no column \"nope\""));
        assert!(Template::parse("{entity|utc}").unwrap().render(&row()).unwrap_err().0.contains("not a timestamp"));
    }
}
