//! The routes the code serves, the routes `openapi.yaml` documents and the
//! routes `template.yaml` deploys are the same set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // test code: a panic is a failed check

use std::collections::{BTreeMap, BTreeSet};

use dev_gateway::template::{Event, Template, Value};

type RouteSet = BTreeSet<(String, String)>;

fn code_routes() -> RouteSet {
    let like = like::routes().list();
    let points = points::routes().list();
    like.into_iter()
        .chain(points)
        .map(|(method, path)| (method.to_string(), path.to_owned()))
        .collect()
}

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// `paths` → path → method, from the parsed document.
fn openapi_routes() -> RouteSet {
    const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];
    let document: Value = serde_yaml_ng::from_str(&read("openapi.yaml")).unwrap();
    let paths = document["paths"]
        .as_mapping()
        .expect("openapi.yaml has paths");
    let mut routes = RouteSet::new();
    for (path, item) in paths {
        for method in item
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(m, _)| m.as_str())
        {
            if METHODS.contains(&method) {
                routes.insert((
                    method.to_ascii_uppercase(),
                    path.as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    routes
}

/// The HTTP API's routes in template.yaml, by the binary of the function
/// each goes to, with the scopes its authorizer requires. `ANY` routes are the
/// catch-alls that let the functions answer unknown paths and wrong methods as
/// problem+json.
fn template_routes() -> BTreeMap<String, BTreeMap<(String, String), Vec<String>>> {
    let template = Template::deployed().unwrap();
    let mut routes = BTreeMap::new();
    for function in template.functions().unwrap().into_values() {
        let served: &mut BTreeMap<_, _> = routes.entry(function.binary.clone()).or_default();
        for event in function.events {
            if let Event::Http {
                method,
                path,
                scopes,
            } = event
                && method != "ANY"
            {
                served.insert((method, path), scopes);
            }
        }
    }
    routes
}

#[test]
fn openapi_documents_exactly_the_routes_the_code_serves() {
    let code = code_routes();
    let documented = openapi_routes();
    assert_eq!(code.len(), 22, "{code:?}");
    let undocumented: Vec<_> = code.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.yaml: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "openapi.yaml documents routes the code lacks: {unserved:?}"
    );
}

/// Each route reaches the function whose router serves it.
#[test]
fn the_template_sends_each_function_exactly_the_routes_its_code_serves() {
    let deployed = template_routes();
    let routes = |binary: &str| -> RouteSet {
        deployed
            .get(binary)
            .map(|routes| routes.keys().cloned().collect())
            .unwrap_or_default()
    };
    let listed = |list: Vec<(axum::http::Method, &'static str)>| -> RouteSet {
        list.into_iter()
            .map(|(method, path)| (method.to_string(), path.to_owned()))
            .collect()
    };
    assert_eq!(routes("like"), listed(like::routes().list()));
    assert_eq!(routes("points"), listed(points::routes().list()));
    let elsewhere: Vec<_> = deployed
        .iter()
        .filter(|(binary, routes)| {
            !["like", "points"].contains(&binary.as_str()) && !routes.is_empty()
        })
        .collect();
    assert!(
        elsewhere.is_empty(),
        "routes to other functions: {elsewhere:?}"
    );
}

/// Every route needs the JWT authorizer but the catch-alls: those reach a
/// function only to be answered 404 or 405 as problem+json, token or not.
#[test]
fn every_route_but_the_catch_alls_needs_a_token() {
    let template = Template::deployed().unwrap();
    let mut catch_alls = 0;
    for (id, function) in template.of_type("AWS::Serverless::Function") {
        let events = function
            .properties
            .get("Events")
            .and_then(|e| e.as_mapping());
        for (name, event) in events.into_iter().flatten() {
            if event.get("Type").and_then(|t| t.as_str()) != Some("HttpApi") {
                continue;
            }
            let properties = &event["Properties"];
            let authorizer = properties
                .get("Auth")
                .and_then(|auth| auth.get("Authorizer"))
                .and_then(|a| a.as_str());
            let catch_all = properties["Method"].as_str() == Some("ANY");
            if catch_all {
                catch_alls += 1;
                assert_eq!(
                    authorizer,
                    Some("NONE"),
                    "{id}.{name:?}: a catch-all is public"
                );
            } else {
                assert!(
                    matches!(authorizer, None | Some("Jwt")),
                    "{id}.{name:?}: the JWT authorizer, got {authorizer:?}"
                );
            }
        }
    }
    assert_eq!(catch_alls, 4);
}

/// Every write under `/v1/points/` acts on other users' points: API Gateway's
/// authorizer must require `points:admin` on each (the function checks it too),
/// and no other route requires a scope (the leaderboard is every user's to read).
#[test]
fn the_template_requires_the_admin_scope_on_every_admin_route() {
    for (binary, routes) in template_routes() {
        for ((method, path), scopes) in routes {
            let expected: Vec<String> = if path.starts_with("/v1/points/") && method != "GET" {
                vec!["points:admin".to_owned()]
            } else {
                vec![]
            };
            assert_eq!(scopes, expected, "{binary}: {method} {path}");
        }
    }
}
