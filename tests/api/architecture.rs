//! The layering of `src/` (docs/architecture.md), checked: every module may use only the modules
//! listed before it. A new module goes into `LAYERS` where it belongs; an edge pointing up fails
//! here with the file that made it.

use std::{collections::BTreeSet, path::Path};

/// Bottom to top. Within a layer, a module may use the ones listed before it.
const LAYERS: &[(&str, &[&str])] = &[
    ("wire errors", &["error"]),
    ("domain", &["domain"]),
    (
        "policies and settings",
        &["telemetry", "url_safety", "config", "crypto"],
    ),
    ("store", &["store"]),
    (
        "infrastructure",
        &[
            "liveness",
            "hot",
            "hierarchy",
            "events",
            "auth",
            "audit",
            "nul_guard",
            "grpc_edge",
            "listener",
            "bootstrap",
            "supervision",
            "state",
            "readiness",
        ],
    ),
    (
        "features",
        &[
            "secrets",
            "runtime",
            "console",
            "plugins",
            "bundles",
            "sweeper",
            "registry",
            "workspaces",
            "a2a",
            "delegations",
            "schedules",
            "templates",
            "github",
            "audit_log",
        ],
    ),
    ("wiring", &["server"]),
    ("operator tools", &["cli"]),
];

/// The top-level modules a source text names through `crate::`.
fn crate_modules_used(source: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::b, c, d::{e, f}}`: the first segment of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (index, ch) in group.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[index..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String = group[index..]
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        used.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    used
}

fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

#[test]
fn modules_only_use_the_layers_below_them() {
    let order: Vec<&str> = LAYERS
        .iter()
        .flat_map(|(_, modules)| modules.iter().copied())
        .collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut unplaced = BTreeSet::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(rank) = order.iter().position(|module| *module == top) else {
            unplaced.insert(top);
            continue;
        };
        let source = std::fs::read_to_string(&file).unwrap();
        for used in crate_modules_used(&source) {
            if used == top || used == "pb" {
                continue;
            }
            match order.iter().position(|module| *module == used) {
                Some(used_rank) if used_rank < rank => {}
                _ => violations.push(format!("{} uses crate::{used}", relative.display())),
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules missing from LAYERS: {unplaced:?}"
    );
    assert!(violations.is_empty(), "edges pointing up: {violations:#?}");
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    let used = crate_modules_used(
        "use crate::{a::{b, c}, d, e::f};\nfn x() { crate::g::h(); }\nuse crate::i::{j, k};",
    );
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["a", "d", "e", "g", "i"]
    );
}

/// utoipa names a component after its type alone: two `ToSchema` types of one name in the
/// gateway would silently share one schema in `/openapi.json`, and one route's replies would be
/// validated against the other's.
#[test]
fn every_openapi_schema_has_a_name_of_its_own() {
    let gateway = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway/src");
    let mut files = Vec::new();
    rust_files(&gateway, &mut files);
    let mut seen = std::collections::BTreeMap::new();
    let mut clashes = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        let mut lines = source.lines();
        while let Some(line) = lines.next() {
            if !(line.contains("#[derive(") && line.contains("ToSchema")) {
                continue;
            }
            let name = lines
                .by_ref()
                .find_map(|line| {
                    let rest = line
                        .trim_start()
                        .strip_prefix("pub(crate) ")
                        .unwrap_or(line.trim_start());
                    let rest = rest.strip_prefix("pub ").unwrap_or(rest);
                    rest.strip_prefix("struct ")
                        .or_else(|| rest.strip_prefix("enum "))
                        .map(|rest| {
                            rest.chars()
                                .take_while(|c| c.is_alphanumeric() || *c == '_')
                                .collect::<String>()
                        })
                })
                .unwrap();
            if let Some(first) = seen.insert(name.clone(), file.clone()) {
                clashes.push(format!(
                    "{name}: {} and {}",
                    first.display(),
                    file.display()
                ));
            }
        }
    }
    assert!(seen.len() > 20, "the scan found the schemas: {seen:?}");
    assert!(clashes.is_empty(), "{clashes:#?}");
}
