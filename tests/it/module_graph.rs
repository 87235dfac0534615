//! The import graph of `src/`, read with `syn` from every file's `use`
//! statements and the `crate::`/`super::` paths in its code (test modules
//! left out): no circles between files, and no import from a lower layer
//! to a higher one.
//!
//! A file's module imports another when it names a path inside it. A
//! folder's `mod.rs` and the files under it are one module's interface and
//! parts, so imports between a file and its own ancestors or descendants
//! are not edges for circles (they still count for layers).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use syn::visit::Visit;

use crate::layering::files;

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The layers, lowest first: a module may import from its own layer and
/// the ones below. The longest matching prefix gives a module's layer.
const LAYERS: &[&[&str]] = &[
    // Shared types and pure functions (server and browser).
    &[
        "model",
        "markdown",
        "pretty_json",
        "search",
        "tools",
        "error",
    ],
    // What every server part may use.
    &["server", "server::config", "server::metrics"],
    // The server's data path, lowest first.
    &["server::fanout"],
    &["server::store"],
    &["server::ingest"],
    // Who people are (built-in accounts): the door and pages above ask it.
    &["server::accounts"],
    &["server::edge"],
    &["server::state"],
    // Server functions, then the UI that calls them and the browser's
    // live state.
    &["api"],
    &["ui", "live"],
    &["app"],
    // The composition roots see everything.
    &["server::app_server", "lib", "main"],
];

/// A file's module path (`server::store::writer` for its `mod.rs`; `lib`
/// and `main` for the roots).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(SRC).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn is_test_module(module: &syn::ItemMod) -> bool {
    module.attrs.iter().any(|attr| {
        attr.path().is_ident("cfg")
            && attr
                .parse_args::<syn::Meta>()
                .is_ok_and(|meta| meta.path().is_ident("test"))
    })
}

/// The paths one file names, each with the module it is written in.
struct Names {
    /// The module the visitor is in (a file's, or an inline one inside it).
    module: Vec<String>,
    found: Vec<(Vec<String>, Vec<String>)>,
}

impl Names {
    fn push(&mut self, path: Vec<String>) {
        if matches!(
            path.first().map(String::as_str),
            Some("crate" | "super" | "self")
        ) || path.len() > 1
        {
            self.found.push((self.module.clone(), path));
        }
    }
}

fn use_paths(tree: &syn::UseTree, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree {
        syn::UseTree::Path(p) => {
            prefix.push(p.ident.to_string());
            use_paths(&p.tree, prefix, out);
            prefix.pop();
        }
        syn::UseTree::Name(n) => {
            let mut path = prefix.clone();
            if n.ident != "self" {
                path.push(n.ident.to_string());
            }
            out.push(path);
        }
        syn::UseTree::Rename(r) => {
            let mut path = prefix.clone();
            path.push(r.ident.to_string());
            out.push(path);
        }
        syn::UseTree::Glob(_) => out.push(prefix.clone()),
        syn::UseTree::Group(g) => {
            for tree in &g.items {
                use_paths(tree, prefix, out);
            }
        }
    }
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
        if is_test_module(module) || module.content.is_none() {
            return;
        }
        self.module.push(module.ident.to_string());
        syn::visit::visit_item_mod(self, module);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        let mut out = Vec::new();
        use_paths(&item.tree, &mut Vec::new(), &mut out);
        for path in out {
            self.push(path);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        self.push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, path);
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        let is_test = item.attrs.iter().any(|a| {
            a.path().is_ident("test") || a.path().segments.last().is_some_and(|s| s.ident == "test")
        });
        if !is_test {
            syn::visit::visit_item_fn(self, item);
        }
    }
}

/// Every file module, and the modules each imports.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = files(Path::new(SRC));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = module_of(file);
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let root: Vec<String> = if from == "lib" || from == "main" {
            Vec::new()
        } else {
            from.split("::").map(str::to_owned).collect()
        };
        let mut names = Names {
            module: root,
            found: Vec::new(),
        };
        names.visit_file(&ast);
        let targets = edges.entry(from.clone()).or_default();
        for (at, path) in names.found {
            if let Some(to) = resolve(&modules, &at, &path) {
                if to != from {
                    targets.insert(to);
                }
            }
        }
    }
    edges
}

/// The file module a path written in module `at` names, if it names one of
/// the crate's.
fn resolve(modules: &BTreeSet<String>, at: &[String], path: &[String]) -> Option<String> {
    let mut absolute: Vec<String> = match path.first().map(String::as_str) {
        Some("crate") => path[1..].to_vec(),
        Some("self") => at.iter().chain(&path[1..]).cloned().collect(),
        Some("super") => {
            let mut base = at.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.into_iter().chain(rest.iter().cloned()).collect()
        }
        Some(first) => {
            // A child module of `at`, named without `self::`.
            let mut child = at.to_vec();
            child.push(first.to_owned());
            if !modules.contains(&child.join("::")) {
                return None;
            }
            at.iter().chain(path).cloned().collect()
        }
        None => return None,
    };
    while !absolute.is_empty() {
        let name = absolute.join("::");
        if modules.contains(&name) {
            return Some(name);
        }
        absolute.pop();
    }
    None
}

fn layer(module: &str) -> usize {
    let mut best: Option<(usize, usize)> = None;
    for (rank, prefixes) in LAYERS.iter().enumerate() {
        for prefix in *prefixes {
            let matches = module == *prefix || module.starts_with(&format!("{prefix}::"));
            if matches && best.is_none_or(|(len, _)| prefix.len() > len) {
                best = Some((prefix.len(), rank));
            }
        }
    }
    best.unwrap_or_else(|| panic!("{module} is in no layer: add it to LAYERS"))
        .1
}

fn related(a: &str, b: &str) -> bool {
    a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

/// Strongly connected components of more than one module (Tarjan's).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        let edges = s.edges;
        for w in edges.get(v).into_iter().flatten() {
            if related(v, w) {
                continue;
            }
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.out
}

#[test]
fn no_import_circle_between_files() {
    let edges = graph();
    let found = circles(&edges);
    assert!(found.is_empty(), "import circles: {found:#?}");
}

#[test]
fn no_import_from_a_lower_layer_to_a_higher_one() {
    let edges = graph();
    let mut upward = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            if layer(to) > layer(from) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(upward.is_empty(), "upward imports: {upward:#?}");
}

/// The checks see real imports: the graph has the data path's edges, a
/// circle made on purpose is found, and a layer is told apart.
#[test]
fn the_graph_sees_what_the_code_imports() {
    let edges = graph();
    assert!(edges["server::edge::sse"].contains("server::fanout::hub"));
    assert!(edges["server::app_server"].contains("server::store::coordination"));
    let mut made: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    made.entry("a".into()).or_default().insert("b".into());
    made.entry("b".into()).or_default().insert("c".into());
    made.entry("c".into()).or_default().insert("a".into());
    assert_eq!(circles(&made), vec![vec!["a", "b", "c"]]);
    assert!(layer("server::app_server") > layer("server::store::writer::batch"));
    assert!(layer("ui::message") > layer("server::edge::export"));
}
