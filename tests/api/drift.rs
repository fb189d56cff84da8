//! The lists most likely to drift from the code, checked against the code's own lists: the backends
//! `HUB_BACKEND`'s parser accepts, and the query parameters each route reads.

use std::collections::BTreeSet;
use std::path::PathBuf;

use hub::routes::admin::CONNECTIONS_PARAMETERS;
use hub::routes::presence::PRESENCE_PARAMETERS;
use hub::routes::query::{POLL_PARAMETERS, STREAM_PARAMETERS, SUBSCRIPTION_PARAMETERS};
use hub::settings::Backend;
use serde_json::Value;

fn repository_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The names `HUB_BACKEND` accepts, as its parser (clap's value enum) spells them.
fn backend_names() -> Vec<String> {
    use clap::ValueEnum as _;
    Backend::value_variants().iter().map(|b| b.to_possible_value().expect("shown").get_name().to_owned()).collect()
}

/// The first line of `text` that contains `marker`.
fn line_with<'a>(text: &'a str, marker: &str, file: &str) -> &'a str {
    text.lines().find(|line| line.contains(marker)).unwrap_or_else(|| panic!("{file}: no line with {marker:?}"))
}

#[test]
fn every_backend_the_parser_accepts_is_named_in_the_readme_the_chart_and_the_metrics_doc() {
    let names = backend_names();
    assert!(names.len() >= 4, "{names:?}");
    let readme = repository_file("README.md");
    let values = repository_file("deploy/helm/realtime-hub/values.yaml");
    let observability = repository_file("docs/OBSERVABILITY.md");
    let schema: Value = serde_json::from_str(&repository_file("deploy/helm/realtime-hub/values.schema.json")).unwrap();

    let places = [
        ("README.md, the HUB_BACKEND row", line_with(&readme, "| `HUB_BACKEND`", "README.md")),
        ("values.yaml, the backend comment", line_with(&values, "# -- The event log:", "values.yaml")),
        ("docs/OBSERVABILITY.md, the backend label", line_with(&observability, "`backend` =", "OBSERVABILITY.md")),
    ];
    for name in &names {
        for (place, line) in places {
            assert!(line.contains(&format!("`{name}`")), "{place} does not name the backend {name}: {line}");
        }
    }
    let in_schema: BTreeSet<&str> =
        schema["properties"]["backend"]["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let parsed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(in_schema, parsed, "the chart's schema allows other backends than the hub parses");
}

#[test]
fn every_query_parameter_a_route_reads_is_in_the_protocol_doc() {
    let protocol = repository_file("docs/PROTOCOL.md");
    let start = protocol.find("## Query parameters").expect("docs/PROTOCOL.md has a section on query parameters");
    let section = &protocol[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |end| end + 3)];

    let routes = [
        &SUBSCRIPTION_PARAMETERS[..],
        &POLL_PARAMETERS,
        &CONNECTIONS_PARAMETERS,
        &STREAM_PARAMETERS,
        &PRESENCE_PARAMETERS,
    ];
    for parameter in routes.concat() {
        assert!(section.contains(&format!("`{parameter}`")), "docs/PROTOCOL.md does not document {parameter:?}");
    }
    assert!(section.contains("refused with 400"), "the section says what happens to other parameters");
}
