//! The host's shape, kept by test: its top-level modules use one another
//! without cycles, and `unsafe` appears only in start-up code (and in
//! loading compiled code from the compile cache, which wasmtime's API makes
//! unsafe).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn host_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The library's top-level module a file belongs to (`csa/io.rs` is `csa`),
/// or none for the crate roots and the binary's own files.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(host_src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs").to_string();
    (!["lib", "main", "cli", "handoff", "notify"].contains(&first.as_str())).then_some(first)
}

/// The top-level modules a file's non-test code names as `crate::NAME`.
fn uses(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    code.match_indices("crate::")
        .map(|(i, m)| code[i + m.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
        .filter(|name: &String| !name.is_empty() && name.chars().next().unwrap().is_lowercase())
        .collect()
}

#[test]
fn the_host_modules_have_no_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&host_src()) {
        let Some(module) = module_of(&file) else { continue };
        let deps = uses(&std::fs::read_to_string(&file).unwrap());
        graph.entry(module.clone()).or_default().extend(deps.into_iter().filter(|d| *d != module));
    }
    assert!(graph.len() > 8, "too few modules found: {graph:?}");
    // Depth-first search; a module met again while on the path closes a cycle.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            panic!("module cycle: {} -> {m}", path[at..].join(" -> "));
        }
        path.push(m);
        for dep in graph.get(m).into_iter().flatten() {
            visit(dep, graph, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn unsafe_is_only_in_start_up_code() {
    for file in rust_files(&host_src()) {
        let name = file.strip_prefix(host_src()).unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        let count = text.matches("unsafe {").count() + text.matches("unsafe fn").count();
        if !["main.rs", "os_limits.rs", "handoff.rs", "sandbox/cache.rs"].contains(&name.as_str()) {
            assert_eq!(count, 0, "{name} has unsafe code");
        }
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("unsafe {") {
                // The comment block just above the line.
                let comment = lines[..i].iter().rev().take_while(|l| l.trim_start().starts_with("//"));
                let justified = comment.into_iter().any(|l| l.contains("SAFETY:"));
                assert!(justified, "{name}:{}: unsafe without a `// SAFETY:` comment", i + 1);
            }
        }
    }
}
