//! The crate's files import one another without a circle: for any two
//! files, at most one reaches the other through its `use` lines and paths
//! (`crate::…`, `super::…`, a `mod.rs` naming its own submodules). A file
//! can then be read knowing only the files below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

/// Every `.rs` file under `dir`, by its path relative to `root`.
fn sources(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).expect("under root");
            let text = std::fs::read_to_string(&path).expect("source file");
            out.insert(rel.to_string_lossy().replace('\\', "/"), text);
        }
    }
}

/// A file's module path: `pool/mod.rs` and `pool.rs` are `["pool"]`.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code a file imports from: what precedes its unit tests, without
/// comments.
fn code(text: &str) -> String {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    let end = text[..end].find("#[cfg(all(test").unwrap_or(end);
    text[..end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Which file each file imports from.
fn imports(files: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeMap<Vec<String>, String> =
        files.keys().map(|f| (module_of(f), f.clone())).collect();
    // The file that defines a path: the longest module prefix of it.
    let resolve = |path: &[String]| {
        (1..=path.len())
            .rev()
            .find_map(|n| modules.get(&path[..n]).cloned())
    };
    let path = Regex::new(r"\b(crate|super)((?:::\w+)+)").unwrap();
    let group = Regex::new(r"\buse\s+(crate|super)((?:::\w+)*)::\{([^}]*)\}").unwrap();
    let declared = Regex::new(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;").unwrap();
    let mut graph = BTreeMap::new();
    for (file, text) in files {
        let me = module_of(file);
        let is_dir = file.ends_with("mod.rs") || file == "lib.rs";
        let parent = if is_dir {
            me[..me.len().saturating_sub(1)].to_vec()
        } else {
            me[..me.len() - 1].to_vec()
        };
        let code = code(text);
        let base = |head: &str| -> Vec<String> {
            if head == "crate" {
                Vec::new()
            } else {
                parent.clone()
            }
        };
        let mut deps = BTreeSet::new();
        let mut add = |p: Vec<String>| {
            if let Some(target) = resolve(&p) {
                if &target != file {
                    deps.insert(target);
                }
            }
        };
        for c in path.captures_iter(&code) {
            let mut p = base(&c[1]);
            p.extend(c[2].split("::").skip(1).map(str::to_owned));
            add(p);
        }
        for c in group.captures_iter(&code) {
            let mut prefix = base(&c[1]);
            prefix.extend(c[2].split("::").skip(1).map(str::to_owned));
            for name in c[3].split(|ch: char| !ch.is_alphanumeric() && ch != '_') {
                if !name.is_empty() {
                    let mut p = prefix.clone();
                    p.push(name.to_owned());
                    add(p);
                }
            }
        }
        if is_dir {
            let body = declared.replace_all(&code, "");
            for c in declared.captures_iter(&code) {
                let child = &c[1];
                let used = Regex::new(&format!(r"(^|[^:\w]){child}::")).unwrap();
                if used.is_match(&body) {
                    let mut p = me.clone();
                    p.push(child.to_owned());
                    add(p);
                }
            }
        }
        graph.insert(file.clone(), deps);
    }
    graph
}

/// A circle of imports, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        at: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|f| f == at) {
            let mut found = stack[i..].to_vec();
            found.push(at.to_owned());
            return Some(found);
        }
        if done.contains(at) {
            return None;
        }
        stack.push(at.to_owned());
        for next in graph.get(at).into_iter().flatten() {
            if let Some(found) = visit(next, graph, done, stack) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(at.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|f| visit(f, graph, &mut done, &mut Vec::new()))
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    sources(&root, &root, &mut files);
    let graph = imports(&files);
    // The check sees imports at all: the pool's handle uses its state.
    assert!(graph["pool/get.rs"].contains("internals/checkout.rs"));
    assert!(graph["cluster/get.rs"].contains("cluster/handle.rs"));
    if let Some(found) = circle(&graph) {
        panic!(
            "these files import each other in a circle: {}",
            found.join(" -> ")
        );
    }
}

#[test]
fn a_circle_is_found() {
    let files: BTreeMap<String, String> = [
        ("lib.rs", "mod a;\nmod b;\n"),
        ("a.rs", "use crate::b::B;\npub struct A;\n"),
        ("b.rs", "use crate::a::A;\npub struct B;\n"),
    ]
    .into_iter()
    .map(|(f, t)| (f.to_owned(), t.to_owned()))
    .collect();
    let found = circle(&imports(&files)).expect("a and b import each other");
    assert!(found.contains(&"a.rs".to_owned()) && found.contains(&"b.rs".to_owned()));
}
