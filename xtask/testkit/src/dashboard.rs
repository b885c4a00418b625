//! The shipped Grafana dashboard (`config/grafana/traffic.json`) as its tests read it: the
//! panels' queries, the metric names they use, and the queries in a form promtool evaluates.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// The dashboard file of the repository.
pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/grafana/traffic.json")
}

/// One query of one panel.
#[derive(Clone, Debug)]
pub struct Query {
    pub panel: String,
    pub expr: String,
}

/// Every panel query, after checking the structure Grafana needs: a title, a schema
/// version, unique panel ids, a grid position on each panel, a Prometheus data source
/// variable and at least one query with an `expr` on every non-row panel.
pub fn queries(text: &str) -> Result<Vec<Query>> {
    let d: Value = serde_json::from_str(text).context("the dashboard is not JSON")?;
    if d["title"].as_str().is_none_or(str::is_empty) || d["schemaVersion"].as_u64().is_none() {
        bail!("the dashboard has no title or schemaVersion");
    }
    let vars = d["templating"]["list"]
        .as_array()
        .context("no templating list")?;
    if !vars
        .iter()
        .any(|v| v["name"] == "datasource" && v["query"] == "prometheus")
    {
        bail!("no Prometheus data source variable");
    }
    let panels = d["panels"].as_array().context("no panels")?;
    let mut ids = BTreeSet::new();
    let mut out = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default().to_owned();
        let id = p["id"]
            .as_u64()
            .with_context(|| format!("{title}: no id"))?;
        if !ids.insert(id) {
            bail!("panel id {id} twice");
        }
        for k in ["h", "w", "x", "y"] {
            if p["gridPos"][k].as_u64().is_none() {
                bail!("{title}: gridPos.{k} missing");
            }
        }
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.with_context(|| format!("{title}: no queries"))?;
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .filter(|e| !e.is_empty())
                .with_context(|| format!("{title}: a query without expr"))?;
            out.push(Query {
                panel: title.clone(),
                expr: expr.to_owned(),
            });
        }
    }
    Ok(out)
}

/// The `traffic_*` metric names a query uses (histogram suffixes removed).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("traffic_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        let before_ok =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if before_ok {
            let name = &expr[start..end];
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(name.to_owned());
        }
        i = end.max(start + 1);
    }
    names
}

/// A query as promtool evaluates it: Grafana's variables replaced by what they stand for
/// (`$__rate_interval` by 5m, `$instance` by any instance).
pub fn for_promtool(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("\"$instance\"", "\".*\"")
}

/// Every query as a recording rule (`promtool check rules` parses each one).
pub fn recording_rules(queries: &[Query]) -> String {
    let mut s = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        s.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: '{}'\n",
            for_promtool(&q.expr).replace('\'', "''")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_and_suffixes_dropped() {
        let n = metric_names(
            "sum(rate(traffic_packets_total[5m])) / my_traffic_x + traffic_probe_duration_seconds_count",
        );
        let want: BTreeSet<String> = ["traffic_packets_total", "traffic_probe_duration_seconds"]
            .map(String::from)
            .into();
        assert_eq!(n, want);
        assert_eq!(
            for_promtool("rate(a{i=~\"$instance\"}[$__rate_interval])"),
            "rate(a{i=~\".*\"}[5m])"
        );
    }
}
