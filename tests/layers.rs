//! The crate's layers (see the map in src/lib.rs and docs/DESIGN.md): each
//! module imports only from modules on its own layer or below, and no two
//! modules import each other, directly or round a longer circle.
//!
//! Read from the source (every `crate::…` and `super::…` path outside
//! comments and `#[cfg(test)]` modules), so the check needs no tool beyond
//! the test itself. A folder's `mod.rs` and its files may use each other
//! (a child's `super::` items, the parent's `pub use` of a child): they are
//! one module seen from outside; circles between sibling files count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module belongs to the first entry that is a prefix of
/// its path.
const LAYERS: &[(&str, &[&str])] = &[
    ("leaves", &["error", "clock"]),
    ("config", &["config"]),
    ("telemetry", &["telemetry"]),
    ("upstream", &["upstream"]),
    ("control", &["control"]),
    ("exchange", &["exchange"]),
    ("adapters", &["adapters"]),
    ("edge", &["edge"]),
    ("entry points", &["demo", "ctl"]),
];

/// Modules the admin API client shares with the server: `ctl` reads the
/// admin API's typed views, and nothing else of the server.
const SHARED_WITH_CTL: &[&str] = &["control::admin::api", "config"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module path (`exchange::attempt`) → source text, without tests.
fn modules() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src_dir()).expect("under src/");
            let mut name = rel.with_extension("").to_string_lossy().replace('/', "::");
            if let Some(parent) = name.strip_suffix("::mod") {
                name = parent.to_string();
            }
            if name == "lib" || name == "main" || name.ends_with("tests") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.insert(name, without_tests(&without_comments(&text)));
        }
    }
    out
}

fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Drops test-only code: a `#[cfg(test)] mod x;` line, and an inline
/// `#[cfg(test)] mod x { … }` to the end of the file (test modules sit at
/// the end, as the crate's habit keeps them); other `#[cfg(test)]` items
/// are one line.
fn without_tests(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "#[cfg(test)]" {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        match lines.next() {
            Some(item)
                if item.trim_start().starts_with("mod ") && item.trim_end().ends_with('{') =>
            {
                break;
            }
            _ => {}
        }
    }
    out
}

/// The modules `text` (of module `name`) imports, resolved to known modules.
fn imports(name: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let resolve = |path: &str| -> Option<String> {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len())
            .rev()
            .map(|n| parts[..n].join("::"))
            .find(|candidate| known.contains(candidate))
    };
    let mut found = BTreeSet::new();
    let parent = name.rsplit_once("::").map_or("", |(p, _)| p);
    for (prefix, base) in [("crate::", String::new()), ("super::", parent.to_string())] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            rest = &rest[i + prefix.len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut paths = vec![path.trim_end_matches(':').to_string()];
            // `crate::a::{b, c::d}`: each item too.
            if path.ends_with("::")
                && let Some(group) = rest[path.len()..].strip_prefix('{')
                && let Some(end) = group.find('}')
            {
                for item in group[..end].split(',') {
                    let item = item.trim().split("::").next().unwrap_or("");
                    paths.push(format!("{}::{item}", path.trim_end_matches(':')));
                }
            }
            for path in paths {
                let full = if base.is_empty() {
                    path
                } else {
                    format!("{base}::{path}")
                };
                if let Some(module) = resolve(&full)
                    && module != name
                    && !name.starts_with(&format!("{module}::"))
                {
                    found.insert(module);
                }
            }
        }
    }
    found
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, prefixes)| {
        prefixes
            .iter()
            .any(|p| module == *p || module.starts_with(&format!("{p}::")))
    })
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    modules
        .iter()
        .map(|(name, text)| (name.clone(), imports(name, text, &known)))
        .collect()
}

#[test]
fn every_module_has_a_layer() {
    let unplaced: Vec<String> = graph()
        .into_keys()
        .filter(|m| layer_of(m).is_none())
        .collect();
    assert!(unplaced.is_empty(), "modules on no layer: {unplaced:?}");
}

#[test]
fn modules_import_only_their_layer_and_below() {
    let mut against = Vec::new();
    for (module, deps) in graph() {
        let Some(own) = layer_of(&module) else {
            continue;
        };
        let is_ctl = module == "ctl" || module.starts_with("ctl::");
        for dep in deps {
            let allowed = if is_ctl {
                // The admin client stands apart: only the shared API types.
                dep.starts_with("ctl")
                    || SHARED_WITH_CTL
                        .iter()
                        .any(|s| dep == *s || dep.starts_with(&format!("{s}::")))
            } else {
                layer_of(&dep).is_some_and(|layer| layer <= own)
            };
            if !allowed {
                against.push(format!("{module} -> {dep}"));
            }
        }
    }
    assert!(
        against.is_empty(),
        "imports against the layers:\n{}",
        against.join("\n")
    );
}

#[test]
fn no_module_imports_itself_round_a_circle() {
    let graph = graph();
    // Depth-first search for a back edge, reporting the circle it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == node) {
            circles.push(format!("{} -> {node}", path[i..].join(" -> ")));
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            visit(dep, graph, path, done, circles);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    let mut circles = Vec::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_check_sees_imports() {
    // The reader itself: a module that imports another is seen to.
    let graph = graph();
    let attempt = graph
        .get("exchange::attempt")
        .expect("exchange::attempt exists");
    assert!(attempt.contains("upstream"), "{attempt:?}");
    assert!(attempt.contains("error"), "{attempt:?}");
}
