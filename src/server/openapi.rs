//! `GET /openapi.json`: the OpenAPI 3.1 document, embedded from `openapi.json` next to this
//! file, with the version and the server's actual defaults filled in.

use serde_json::{json, Value};

use super::state::State;

/// The document as written.
const DOCUMENT: &str = include_str!("openapi.json");

/// The document this server serves (cached once the models are loaded).
pub(crate) fn document(state: &State) -> Vec<u8> {
    if let Some(cached) = state.openapi.get() {
        return cached.clone();
    }
    let mut doc = parsed();
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    let parameters = &mut doc["components"]["parameters"];
    parameters["decode"]["schema"]["default"] = json!(state.config.decode.name());
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    match state.models.get() {
        Some(models) => {
            doc["components"]["parameters"]["model"]["schema"]["default"] =
                json!(models.default_tags());
            let body = serde_json::to_vec(&doc).unwrap_or_default();
            state.openapi.get_or_init(|| body).clone()
        }
        None => body,
    }
}

/// The embedded document, parsed.
pub(crate) fn parsed() -> Value {
    serde_json::from_str(DOCUMENT).expect("src/server/openapi.json is valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ROUTES;
    use std::collections::BTreeSet;

    /// Query parameter names of one operation, `$ref`s resolved.
    fn query_params(doc: &Value, op: &Value) -> BTreeSet<String> {
        op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| match p["$ref"].as_str() {
                Some(r) => doc.pointer(&r[1..]).cloned().unwrap_or_default(),
                None => p.clone(),
            })
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn the_document_lists_exactly_the_routes_methods_and_query_parameters() {
        let doc = parsed();
        let paths = doc["paths"].as_object().unwrap();
        let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
        let routed: BTreeSet<&str> = ROUTES.iter().map(|r| r.path).collect();
        assert_eq!(documented, routed);
        for route in ROUTES {
            let item = paths[route.path].as_object().unwrap();
            let methods: BTreeSet<String> = item.keys().map(|m| m.to_uppercase()).collect();
            let expected: BTreeSet<String> = route.methods.iter().map(|m| m.to_string()).collect();
            assert_eq!(methods, expected, "{}", route.path);
            for op in item.values() {
                let expected: BTreeSet<String> =
                    route.query.iter().map(|q| q.to_string()).collect();
                assert_eq!(query_params(&doc, op), expected, "{}", route.path);
                for response in op["responses"].as_object().unwrap().values() {
                    if let Some(r) = response["$ref"].as_str() {
                        assert!(doc.pointer(&r[1..]).is_some(), "dangling {r}");
                    }
                }
            }
        }
    }
}
