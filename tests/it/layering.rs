//! The server's folders follow the data path and depend on each other one
//! way (`edge` -> `ingest` -> `store` -> `fanout`; `config` and `metrics`
//! for all), and no database driver type appears outside `store/`: a
//! second backend is an addition there, not a change elsewhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/server");
const FOLDERS: [&str; 4] = ["ingest", "store", "fanout", "edge"];

/// Every `.rs` file under `dir`, in path order.
pub(crate) fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `file: word` for each of `words` found in the code of a file under
/// `src/` that is not under one of `allowed` (a folder or a file).
fn found_outside(allowed: &[PathBuf], words: &[&str]) -> Vec<String> {
    let src = Path::new(SERVER).parent().unwrap();
    let mut found = Vec::new();
    for file in files(src) {
        if allowed.iter().any(|a| file.starts_with(a)) {
            continue;
        }
        let text = code(&file);
        for word in words {
            if text.contains(word) {
                found.push(format!("{}: {word}", file.display()));
            }
        }
    }
    found
}

/// Source without `//` comments.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level names a path prefix such as `crate::server::` reaches in
/// `text`: `prefix name::...` and `prefix {a::..., b, ...}`.
fn reached(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => {
                        names.insert(head(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if depth == 1 {
                    item.push(c);
                }
            }
            names.insert(head(&item));
        } else {
            names.insert(head(rest));
        }
    }
    names.remove("");
    names
}

fn head(item: &str) -> String {
    item.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn folder_deps() -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut deps = BTreeMap::new();
    for folder in FOLDERS {
        let root = Path::new(SERVER).join(folder);
        let mut reach = BTreeSet::new();
        for file in files(&root) {
            let text = code(&file);
            reach.extend(reached(&text, "crate::server::"));
            // In a folder's own mod.rs, `super::` is the server.
            if file == root.join("mod.rs") {
                reach.extend(reached(&text, "super::"));
            }
        }
        reach.retain(|name| FOLDERS.contains(&name.as_str()) && name != folder);
        deps.insert(folder, reach);
    }
    deps
}

#[test]
fn the_server_folders_depend_one_way() {
    let deps = folder_deps();
    let allowed: BTreeMap<&str, &[&str]> = [
        ("edge", &["ingest", "store", "fanout"][..]),
        ("ingest", &["store"][..]),
        ("store", &["fanout"][..]),
        ("fanout", &[][..]),
    ]
    .into_iter()
    .collect();
    for (folder, reach) in &deps {
        for name in reach {
            assert!(
                allowed[folder].contains(&name.as_str()),
                "server/{folder} uses server/{name}: {deps:?}"
            );
        }
    }
    // The check sees real dependencies (it is not vacuous).
    assert!(deps["edge"].contains("store") && deps["store"].contains("fanout"));
}

#[test]
fn no_database_driver_type_outside_the_store() {
    let store = Path::new(SERVER).join("store");
    let offenders = found_outside(
        std::slice::from_ref(&store),
        &["Sqlite", "PgPool", "PgConnection", "Postgres"],
    );
    assert!(offenders.is_empty(), "{offenders:?}");
    assert!(code(&store.join("sqlite/mod.rs")).contains("SqlitePool"));
}

/// "One instance or several" is the coordination's answer (chosen by
/// `cluster.enabled`), never a question asked of the database driver:
/// outside `store/` nothing asks which backend the store is.
#[test]
fn no_backend_question_outside_the_store() {
    let store = Path::new(SERVER).join("store");
    let config = Path::new(SERVER).join("config.rs");
    let offenders = found_outside(
        &[store.clone(), config],
        &[
            "as_postgres",
            "as_sqlite",
            "Backend::Postgres",
            "Backend::Sqlite",
            "postgres_url",
        ],
    );
    assert!(offenders.is_empty(), "{offenders:?}");
    // The check sees the questions where they are asked.
    assert!(code(&store.join("coordination/mod.rs")).contains("postgres_url"));
    assert!(code(&store.join("mod.rs")).contains("Backend::Postgres"));
}

/// The backends are the store's own: their modules and `Store`'s variants
/// are private, so the rule above is held by the compiler, not only by a
/// search.
#[test]
fn the_backends_are_private_to_the_store() {
    let text = code(&Path::new(SERVER).join("store/mod.rs"));
    for backend in ["postgres", "sqlite"] {
        assert!(text.contains(&format!("\nmod {backend};")), "{backend}");
        assert!(!text.contains(&format!("pub mod {backend}")), "{backend}");
    }
    assert!(text.contains("pub struct Store(Backend);"));
    // Each is the one contract's implementation (`store/storage.rs`).
    let store = Path::new(SERVER).join("store");
    assert!(code(&store.join("sqlite/mod.rs")).contains("impl Storage for SqliteStore"));
    assert!(code(&store.join("postgres/mod.rs")).contains("impl Storage for PostgresStore"));
    assert!(text.contains("\nenum Backend {"));
}

/// "Alone or shared" is asked of `Coordination`, never inspected: outside
/// its folder nothing names its implementations or asks which one it is
/// (the predicates it once had are gone), and nothing reads the setting
/// that chooses it.
#[test]
fn no_branch_on_the_coordination_kind_outside_its_folder() {
    let folder = Path::new(SERVER).join("store/coordination");
    let config = Path::new(SERVER).join("config");
    let offenders = found_outside(
        &[folder.clone(), config.clone(), config.with_extension("rs")],
        &[
            "cluster()",
            "writer_publishes",
            "Coordination::Single",
            "Coordination::Cluster",
            "Kind::Solo",
            "Kind::Shared",
            "Solo",
            "Shared(",
            "Cluster",
            "cluster.enabled",
            ".postgres()",
            "Revisions",
        ],
    );
    assert!(offenders.is_empty(), "{offenders:?}");
    // The check sees the kinds where they are chosen.
    let chosen = code(&folder.join("mod.rs"));
    assert!(chosen.contains("Kind::Shared(") && chosen.contains("cluster.enabled"));
}

/// Functions the size of a screen: none in `src/server/` (tests aside) is
/// longer than 80 lines, counted from its `fn` line to the brace that
/// closes it at the same indentation (rustfmt's layout).
#[test]
fn no_server_function_over_80_lines() {
    const MAX: usize = 80;
    let mut long = Vec::new();
    for file in files(Path::new(SERVER)) {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        // Test modules are the end of a file.
        if let Some(at) = lines
            .windows(2)
            .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "))
        {
            lines.truncate(at);
        }
        for (i, line) in lines.iter().enumerate() {
            let body = line.trim_start();
            let indent = &line[..line.len() - body.len()];
            let signature = body
                .trim_start_matches("pub ")
                .trim_start_matches("pub(super) ")
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("async ")
                .trim_start_matches("const ");
            if !signature.starts_with("fn ") {
                continue;
            }
            let close = format!("{indent}}}");
            if let Some(end) = lines[i + 1..].iter().position(|l| *l == close) {
                if end + 2 > MAX {
                    long.push(format!("{}:{} ({} lines)", file.display(), i + 1, end + 2));
                }
            }
        }
    }
    assert!(long.is_empty(), "functions over {MAX} lines: {long:#?}");
}

/// Every server function naming a thread asks `respond::member` first
/// (itself, or through a helper of its file), so a private thread is an
/// unknown id to anyone else (`tests/it/private_threads.rs` tries each one
/// from outside; this keeps a new one from forgetting).
#[test]
fn every_server_function_naming_a_thread_checks_membership() {
    use quote::ToTokens;
    let api = Path::new(SERVER).parent().unwrap().join("api");
    let mut unchecked = Vec::new();
    for file in files(&api) {
        let parsed = syn::parse_file(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let bodies: BTreeMap<String, String> = parsed
            .items
            .iter()
            .filter_map(|item| match item {
                syn::Item::Fn(f) => Some((
                    f.sig.ident.to_string(),
                    f.block.to_token_stream().to_string(),
                )),
                _ => None,
            })
            .collect();
        let checks = |body: &str| body.contains("respond :: member (");
        for item in &parsed.items {
            let syn::Item::Fn(f) = item else { continue };
            let is_server = f.attrs.iter().any(|a| a.path().is_ident("server"));
            let names_thread = f.sig.inputs.iter().any(|input| {
                matches!(input, syn::FnArg::Typed(t) if t.pat.to_token_stream().to_string() == "thread")
            });
            if !is_server || !names_thread {
                continue;
            }
            let body = &bodies[&f.sig.ident.to_string()];
            let through_helper = bodies
                .iter()
                .any(|(name, helper)| body.contains(&format!("{name} (")) && checks(helper));
            if !checks(body) && !through_helper {
                unchecked.push(format!("{}: {}", file.display(), f.sig.ident));
            }
        }
    }
    assert!(
        unchecked.is_empty(),
        "server functions that skip the membership check: {unchecked:#?}"
    );
}
