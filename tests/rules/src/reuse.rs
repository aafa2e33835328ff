//! Whether the test build reuses what the demo's build compiled: every
//! unit of cargo's unit graph for the demo's build (`cargo build
//! --unit-graph`) must be in the test build's, with the same features,
//! profile and dependencies all the way down. A unit missing there is a
//! crate the test build would compile a second time.

use std::collections::{BTreeSet, HashMap};

/// A unit as the two builds are compared: its package, features, mode,
/// platform, target and profile, and its dependencies' identities.
type Identity = String;

/// Why a unit graph cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("not a unit graph: {0}")]
pub struct GraphError(String);

/// The identity of every unit of `graph` (cargo's `--unit-graph` JSON).
pub fn identities(graph: &str) -> Result<BTreeSet<Identity>, GraphError> {
    let value: serde_json::Value =
        serde_json::from_str(graph).map_err(|e| GraphError(e.to_string()))?;
    let units = value["units"]
        .as_array()
        .ok_or_else(|| GraphError("no `units`".into()))?;
    let mut memo = HashMap::new();
    (0..units.len())
        .map(|i| identity(units, i, &mut memo, 0))
        .collect()
}

fn identity(
    units: &[serde_json::Value],
    i: usize,
    memo: &mut HashMap<usize, Identity>,
    depth: usize,
) -> Result<Identity, GraphError> {
    if let Some(id) = memo.get(&i) {
        return Ok(id.clone());
    }
    if depth > units.len() {
        return Err(GraphError("a circle in the units".into()));
    }
    let unit = units
        .get(i)
        .ok_or_else(|| GraphError(format!("no unit {i}")))?;
    let mut deps: Vec<Identity> = unit["dependencies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let index = d["index"]
                .as_u64()
                .ok_or_else(|| GraphError("a dependency without an index".into()))?;
            identity(units, index as usize, memo, depth + 1)
        })
        .collect::<Result<_, _>>()?;
    deps.sort();
    let target = unit["target"]["name"].as_str().unwrap_or_default();
    let id = format!(
        "{target} {} {} {} {} {} [{}]",
        unit["features"],
        unit["pkg_id"],
        unit["mode"],
        unit["platform"],
        unit["profile"],
        deps.join(", ")
    );
    memo.insert(i, id.clone());
    Ok(id)
}

/// The units of `demo` that `full` does not have, each as `target
/// [features]`, shortest first (the root causes come before what they
/// changed above them).
pub fn not_reused(demo: &str, full: &str) -> Result<Vec<String>, GraphError> {
    let full = identities(full)?;
    let mut missing: Vec<String> = identities(demo)?
        .into_iter()
        .filter(|u| !full.contains(u))
        .collect();
    missing.sort_by_key(String::len);
    Ok(missing
        .into_iter()
        .map(|u| u.split(" \"").next().unwrap_or_default().to_string())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(tokio_features: &str) -> String {
        format!(
            r#"{{"version":1,"units":[
              {{"pkg_id":"registry+x#tokio@1.0.0","target":{{"name":"tokio"}},"features":[{tokio_features}],"mode":"build","platform":null,"profile":{{"name":"release"}},"dependencies":[]}},
              {{"pkg_id":"path+file:///w/host#0.1.0","target":{{"name":"host"}},"features":[],"mode":"build","platform":null,"profile":{{"name":"release"}},"dependencies":[{{"index":0}}]}}
            ]}}"#
        )
    }

    #[test]
    fn the_same_units_are_reused() {
        assert_eq!(
            not_reused(&graph(r#""rt""#), &graph(r#""rt""#)).unwrap(),
            [""; 0]
        );
    }

    #[test]
    fn a_dependency_with_other_features_is_built_again_with_all_above_it() {
        let missing = not_reused(&graph(r#""rt""#), &graph(r#""rt","test-util""#)).unwrap();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert_eq!(missing, ["tokio [\"rt\"]", "host []"]);
    }
}
