//! The routes the code serves, the routes `openapi.yaml` documents and the
//! routes `template.yaml` deploys are the same set.

use std::collections::BTreeSet;

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

/// Paths are keys indented by two spaces under `paths:`, methods by four.
fn openapi_routes() -> RouteSet {
    let document = read("openapi.yaml");
    let mut routes = RouteSet::new();
    let mut in_paths = false;
    let mut path = None;
    for line in document.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.starts_with("paths:");
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(key) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !key.starts_with(' ')
        {
            path = Some(key.trim_matches('"').to_owned());
            continue;
        }
        if let Some(key) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':')) {
            const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];
            if METHODS.contains(&key) {
                routes.insert((
                    key.to_uppercase(),
                    path.clone().expect("a method under a path"),
                ));
            }
        }
    }
    routes
}

/// `HttpApi` events: a `Method:` followed by its `Path:` (flow or block style).
fn template_routes() -> RouteSet {
    let template = read("template.yaml");
    let value_after = |line: &str, key: &str| -> Option<String> {
        let rest = line[line.find(key)? + key.len()..].trim_start();
        Some(match rest.strip_prefix('"') {
            Some(quoted) => quoted[..quoted.find('"')?].to_owned(),
            None => rest.split([',', '}']).next()?.trim().to_owned(),
        })
    };
    let mut routes = RouteSet::new();
    let mut method: Option<String> = None;
    for line in template.lines() {
        if let Some(m) = value_after(line, "Method: ") {
            method = Some(m);
        }
        if let Some(p) = value_after(line, "Path: ") {
            let m = method.take().expect("Path follows Method in template.yaml");
            // `ANY` routes are the catch-alls that let the functions answer
            // unknown paths and wrong methods as problem+json.
            if m != "ANY" {
                routes.insert((m, p));
            }
        }
    }
    routes
}

#[test]
fn openapi_documents_exactly_the_routes_the_code_serves() {
    let code = code_routes();
    let documented = openapi_routes();
    assert_eq!(code.len(), 18, "{code:?}");
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

#[test]
fn the_template_deploys_exactly_the_routes_the_code_serves() {
    let code = code_routes();
    let deployed = template_routes();
    let missing: Vec<_> = code.difference(&deployed).collect();
    let extra: Vec<_> = deployed.difference(&code).collect();
    assert!(
        missing.is_empty(),
        "routes missing from template.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "template.yaml routes the code lacks: {extra:?}"
    );
}

/// Every route under `/v1/points/` acts on other users' points: API Gateway's
/// authorizer must require `points:admin` on each (the function checks it too).
#[test]
fn the_template_requires_the_admin_scope_on_every_admin_route() {
    let template = read("template.yaml");
    let scoped: BTreeSet<String> = template
        .split("Type: HttpApi")
        .filter(|event| event.contains("AuthorizationScopes: [points:admin]"))
        .filter_map(|event| {
            let path = event
                .lines()
                .find_map(|l| l.trim().strip_prefix("Path: "))?;
            Some(path.trim_matches('"').to_owned())
        })
        .collect();
    let admin: BTreeSet<String> = code_routes()
        .into_iter()
        .map(|(_, path)| path)
        .filter(|path| path.starts_with("/v1/points/"))
        .collect();
    assert_eq!(scoped, admin);
}
