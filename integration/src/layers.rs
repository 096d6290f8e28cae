//! The shape check of `docs/architecture.md` ("Layers"): reads the operator's `src/**/*.rs`,
//! maps every file to its module and layer, follows `crate::`, `super::`, `self::` and
//! child-module paths, and reports
//! - an import from a lower layer into a higher one,
//! - an import circle between top-level modules or between files,
//! - a function over [`MAX_FN_LINES`] or a file over [`MAX_FILE_LINES`] lines of code.
//!
//! Lines of code are lines that hold something once comments are removed; test code
//! (`#[cfg(test)]` items and the files they declare) is left out of every measure.
//! The reader is lexical, not a compiler: it sees paths, not name resolution, which is enough
//! for a crate that spells its imports out (no glob re-exports across modules).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const MAX_FN_LINES: usize = 120;
pub const MAX_FILE_LINES: usize = 600;

/// The layers, lowest first: a module may import its own layer or a lower one.
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "model",
            "crd",
            "text",
            "time",
            "backoff",
            "heap",
            "shutdown",
            "manifest_pins",
        ],
    ),
    (
        "rules",
        &["verdict", "policy", "template", "catalog", "metrics"],
    ),
    (
        "services",
        &[
            "admission",
            "notify",
            "events",
            "leader",
            "certs",
            "readiness",
            "admin",
        ],
    ),
    ("controllers and servers", &["controller", "server"]),
    (
        "wiring",
        &[
            "wiring",
            "config",
            "migrate",
            "telemetry",
            "main",
            "fuzzing",
        ],
    ),
];

/// One source file as the check sees it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Relative to the crate root, `/`-separated: `src/admission/mod.rs`.
    pub path: String,
    pub text: String,
}

/// What the check found, each a sentence naming the files involved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    /// The files the violation starts in.
    pub files: Vec<String>,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every `.rs` file under `root/src`, with paths relative to `root`.
pub fn read_sources(root: &Path) -> std::io::Result<Vec<SourceFile>> {
    let mut files = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel: PathBuf = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push(SourceFile {
                    path: rel,
                    text: std::fs::read_to_string(&path)?,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The module path of a file: `src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`; `src/lib.rs`
/// is `[]`; `src/main.rs` is `[main]` (the binary, a crate of its own).
fn module_of(path: &str) -> Vec<String> {
    let inner = path.strip_prefix("src/").unwrap_or(path);
    let inner = inner.strip_suffix(".rs").unwrap_or(inner);
    let mut parts: Vec<String> = inner.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts == ["lib"] {
        parts.clear();
    }
    parts
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// The text with comments, string and char literals blanked (newlines kept), so what
/// remains is code and line numbers still match.
pub fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < c.len() {
        let at = |k: usize| c.get(k).copied().unwrap_or('\0');
        if c[i] == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if (c[i] == 'r' || (c[i] == 'b' && at(i + 1) == 'r'))
            && !ident_char(at(i.wrapping_sub(1)))
            && {
                let s = if c[i] == 'b' { i + 2 } else { i + 1 };
                let mut k = s;
                while at(k) == '#' {
                    k += 1;
                }
                at(k) == '"'
            }
        {
            // A raw string: r"…", r#"…"#, br"…".
            let s = if c[i] == 'b' { i + 2 } else { i + 1 };
            let mut k = s;
            while at(k) == '#' {
                k += 1;
            }
            let hashes = k - s;
            for _ in i..=k {
                out.push(' ');
            }
            i = k + 1;
            while i < c.len() {
                if c[i] == '"' && (0..hashes).all(|h| at(i + 1 + h) == '#') {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if c[i] == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < c.len() {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c[i] == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                out.push_str("  ");
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            } else if at(i + 2) == '\'' {
                out.push_str("   ");
                i += 3;
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

fn ident_char(ch: char) -> bool {
    ch.is_alphanumeric() || ch == '_'
}

/// Byte ranges of `#[cfg(test)]` items (an inline module, a function, a `use`), so they are
/// left out. `code` is stripped text.
fn test_ranges(code: &str) -> Vec<(usize, usize)> {
    let b = code.as_bytes();
    let mut ranges = Vec::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find("#[cfg(test)]") {
        let start = from + pos;
        let mut i = start + "#[cfg(test)]".len();
        // The item ends at its first `;` at depth 0, or at the `}` closing its first `{`.
        let mut depth = 0usize;
        while i < b.len() {
            match b[i] {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                b';' if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        ranges.push((start, i));
        from = i;
    }
    ranges
}

/// `code` with the test items blanked, newlines kept.
fn without_tests(code: &str) -> String {
    let mut out: Vec<u8> = code.as_bytes().to_vec();
    for (s, e) in test_ranges(code) {
        for byte in &mut out[s..e] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Children declared `#[cfg(test)] mod name;`: files holding only tests.
fn test_children(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (s, e) in test_ranges(code) {
        let item = code[s + "#[cfg(test)]".len()..e].trim();
        let item = item.strip_prefix("pub(crate)").unwrap_or(item).trim_start();
        let item = item.strip_prefix("pub").unwrap_or(item).trim_start();
        if let Some(rest) = item.strip_prefix("mod ")
            && let Some(name) = rest.trim().strip_suffix(';')
        {
            names.push(name.trim().to_string());
        }
    }
    names
}

/// Children declared `mod name;` (not test-only) in non-test code.
fn declared_children(code: &str) -> Vec<String> {
    let toks = tokens(code);
    let mut names = Vec::new();
    for w in toks.windows(3) {
        if w[0].1 == "mod" && w[2].1 == ";" && w[1].1.chars().all(ident_char) {
            names.push(w[1].1.clone());
        }
    }
    names
}

/// Tokens of stripped code: identifiers, `::` and single punctuation, with their line.
fn tokens(code: &str) -> Vec<(usize, String)> {
    let c: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ident_char(ch) {
            let s = i;
            while i < c.len() && ident_char(c[i]) {
                i += 1;
            }
            toks.push((line, c[s..i].iter().collect()));
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            toks.push((line, "::".into()));
            i += 2;
        } else {
            toks.push((line, ch.to_string()));
            i += 1;
        }
    }
    toks
}

/// The paths a file names: each a start (`crate`, `super`, `self`, a child module) and the
/// segments after it, with the line. Use-groups are expanded: `crate::{a::b, c}` gives
/// `crate::a::b` and `crate::c`.
fn paths(code: &str, roots: &BTreeSet<String>) -> Vec<(usize, Vec<String>)> {
    let toks = tokens(code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i].1;
        let after_colons = i > 0 && toks[i - 1].1 == "::";
        if roots.contains(t) && !after_colons && toks.get(i + 1).is_some_and(|n| n.1 == "::") {
            let mut found = Vec::new();
            let end = path_tree(&toks, i, vec![], &mut found);
            for p in found {
                out.push((toks[i].0, p));
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Reads a path (or a use tree) at `i` with `prefix` already read; pushes every full path
/// into `out` and returns the index after it.
fn path_tree(
    toks: &[(usize, String)],
    mut i: usize,
    prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let mut segs = prefix;
    while let Some((_, t)) = toks.get(i) {
        if t == "{" {
            i += 1;
            loop {
                match toks.get(i).map(|t| t.1.as_str()) {
                    None => return i,
                    Some("}") => return i + 1,
                    Some(",") => i += 1,
                    Some(_) => i = path_tree(toks, i, segs.clone(), out),
                }
            }
        }
        if t.chars().all(ident_char) {
            if t != "self" || segs.is_empty() {
                segs.push(t.clone());
            }
            i += 1;
            if toks.get(i).is_some_and(|n| n.1 == "::") {
                i += 1;
                continue;
            }
        }
        break;
    }
    // `as name` and `*` end a use tree; neither changes where the path points.
    if toks.get(i).is_some_and(|t| t.1 == "as") {
        i += 2;
    } else if toks.get(i).is_some_and(|t| t.1 == "*") {
        i += 1;
    }
    out.push(segs);
    i
}

/// One file's facts, read once.
struct FileFacts {
    module: Vec<String>,
    /// Non-test code, stripped.
    code: String,
}

/// The whole check over `files`; returns every violation, sorted.
pub fn check(files: &[SourceFile]) -> Vec<Violation> {
    // Which files hold only tests: those declared `#[cfg(test)] mod x;` by their parent.
    let mut test_files = BTreeSet::new();
    let stripped: BTreeMap<&str, String> = files
        .iter()
        .map(|f| (f.path.as_str(), strip(&f.text)))
        .collect();
    for f in files {
        let module = module_of(&f.path);
        for child in test_children(&stripped[f.path.as_str()]) {
            let mut m = module.clone();
            m.push(child);
            test_files.insert(m);
        }
    }
    let mut facts: BTreeMap<String, FileFacts> = BTreeMap::new();
    let mut by_module: BTreeMap<Vec<String>, String> = BTreeMap::new();
    for f in files {
        let module = module_of(&f.path);
        // A file below a test-only module is test code too.
        if (1..=module.len()).any(|n| test_files.contains(&module[..n])) {
            continue;
        }
        by_module.insert(module.clone(), f.path.clone());
        facts.insert(
            f.path.clone(),
            FileFacts {
                module,
                code: without_tests(&stripped[f.path.as_str()]),
            },
        );
    }

    let mut violations = Vec::new();
    let mut file_edges: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut module_edges: BTreeMap<String, BTreeMap<String, (String, usize)>> = BTreeMap::new();
    for (path, f) in &facts {
        let children = declared_children(&f.code);
        let mut roots: BTreeSet<String> = ["crate", "super", "self"].map(String::from).into();
        roots.extend(children.iter().cloned());
        if f.module == ["main"] {
            roots.insert("cyberdesk_operator".into());
        }
        for (line, segs) in paths(&f.code, &roots) {
            let Some(target) = resolve(&f.module, &segs, &by_module) else {
                continue;
            };
            if &target == path {
                continue;
            }
            file_edges
                .entry(path.clone())
                .or_default()
                .entry(target.clone())
                .or_insert(line);
            let from_top = top(&f.module);
            let to_top = top(&facts[&target].module);
            if let (Some(a), Some(b)) = (from_top, to_top)
                && a != b
            {
                module_edges
                    .entry(a.to_string())
                    .or_default()
                    .entry(b.to_string())
                    .or_insert((path.clone(), line));
            }
        }
    }

    // (a) imports against the layers.
    for (from, tos) in &module_edges {
        let Some(lf) = layer_of(from) else {
            violations.push(Violation {
                files: vec![],
                message: format!(
                    "module `{from}` is in no layer (add it to LAYERS and docs/architecture.md)"
                ),
            });
            continue;
        };
        for (to, (path, line)) in tos {
            match layer_of(to) {
                Some(lt) if lt > lf => violations.push(Violation {
                    files: vec![path.clone()],
                    message: format!(
                        "layer: {path}:{line}: `{from}` ({}) imports `{to}` ({}), a higher layer",
                        LAYERS[lf].0, LAYERS[lt].0
                    ),
                }),
                _ => {}
            }
        }
    }
    for to in module_edges
        .values()
        .flat_map(|t| t.keys())
        .collect::<BTreeSet<_>>()
    {
        if layer_of(to).is_none() && !module_edges.contains_key(to) {
            violations.push(Violation {
                files: vec![],
                message: format!(
                    "module `{to}` is in no layer (add it to LAYERS and docs/architecture.md)"
                ),
            });
        }
    }

    // (b) circles, between modules and between files.
    let module_graph: BTreeMap<String, BTreeSet<String>> = module_edges
        .iter()
        .map(|(a, tos)| (a.clone(), tos.keys().cloned().collect()))
        .collect();
    for circle in circles(&module_graph) {
        let mut files = Vec::new();
        let mut steps = Vec::new();
        for (k, a) in circle.iter().enumerate() {
            let b = &circle[(k + 1) % circle.len()];
            let (path, line) = &module_edges[a][b];
            files.push(path.clone());
            steps.push(format!("{a} → {b} ({path}:{line})"));
        }
        violations.push(Violation {
            files,
            message: format!("module circle: {}", steps.join(", ")),
        });
    }
    let file_graph: BTreeMap<String, BTreeSet<String>> = file_edges
        .iter()
        .map(|(a, tos)| (a.clone(), tos.keys().cloned().collect()))
        .collect();
    for circle in circles(&file_graph) {
        let mut steps = Vec::new();
        for (k, a) in circle.iter().enumerate() {
            let b = &circle[(k + 1) % circle.len()];
            steps.push(format!("{a}:{} → {b}", file_edges[a][b]));
        }
        violations.push(Violation {
            files: circle.clone(),
            message: format!("file circle: {}", steps.join(", ")),
        });
    }

    // (c) sizes.
    for (path, f) in &facts {
        let loc = code_lines(&f.code);
        if loc > MAX_FILE_LINES {
            violations.push(Violation {
                files: vec![path.clone()],
                message: format!("size: {path} has {loc} lines of code (over {MAX_FILE_LINES})"),
            });
        }
        for (name, line, n) in functions(&f.code) {
            if n > MAX_FN_LINES {
                violations.push(Violation {
                    files: vec![path.clone()],
                    message: format!(
                        "size: {path}:{line}: fn {name} has {n} lines of code (over {MAX_FN_LINES})"
                    ),
                });
            }
        }
    }
    violations.sort();
    violations
}

fn top(module: &[String]) -> Option<&str> {
    module.first().map(String::as_str)
}

/// The file a path points into: the longest prefix of it that is a module with a file.
fn resolve(
    here: &[String],
    segs: &[String],
    by_module: &BTreeMap<Vec<String>, String>,
) -> Option<String> {
    let mut base: Vec<String>;
    let mut rest = segs;
    match segs.first().map(String::as_str) {
        Some("crate") | Some("cyberdesk_operator") => {
            base = vec![];
            rest = &segs[1..];
        }
        Some("self") => {
            base = here.to_vec();
            rest = &segs[1..];
        }
        Some("super") => {
            base = here.to_vec();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        // A child module named without a prefix.
        Some(_) => base = here.to_vec(),
        None => return None,
    }
    if here == ["main"] && segs.first().is_some_and(|s| s == "crate") {
        return None;
    }
    let mut best = by_module.get(&base).cloned();
    let mut m = base;
    for s in rest {
        m.push(s.clone());
        match by_module.get(&m) {
            Some(p) => best = Some(p.clone()),
            None => break,
        }
    }
    best
}

/// Non-blank lines of stripped code.
pub fn code_lines(code: &str) -> usize {
    code.lines().filter(|l| !l.trim().is_empty()).count()
}

/// Every function with a body: its name, first line and lines of code.
pub fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let toks = tokens(code);
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (k, w) in toks.windows(2).enumerate() {
        if w[0].1 != "fn" || !w[1].1.chars().all(ident_char) {
            continue;
        }
        // The body is the first `{` before any `;` (a declaration without a body).
        let mut j = k + 2;
        while j < toks.len() && toks[j].1 != "{" && toks[j].1 != ";" {
            j += 1;
        }
        if toks.get(j).is_none_or(|t| t.1 == ";") {
            continue;
        }
        let mut depth = 0usize;
        let mut end_line = toks[j].0;
        while j < toks.len() {
            match toks[j].1.as_str() {
                "{" => depth += 1,
                "}" => {
                    depth -= 1;
                    if depth == 0 {
                        end_line = toks[j].0;
                        break;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        let start = w[0].0;
        let n = lines
            .get(start - 1..end_line.min(lines.len()))
            .map(|ls| ls.iter().filter(|l| !l.trim().is_empty()).count())
            .unwrap_or(0);
        out.push((w[1].1.clone(), start, n));
    }
    out
}

/// The circles of `graph`: its strongly connected parts of more than one node (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(tos) = s.graph.get(v) {
            for w in tos {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut part = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                part.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if part.len() > 1 {
                s.out.push(part);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    // Each part as the shortest circles through each of its members, so every edge that
    // keeps the part together is named somewhere.
    let mut found: Vec<Vec<String>> = Vec::new();
    for part in s.out {
        for start in &part {
            if let Some(mut circle) = shortest_circle(graph, &part, start) {
                let first = circle
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.cmp(b.1))
                    .map_or(0, |(k, _)| k);
                circle.rotate_left(first);
                if !found.contains(&circle) {
                    found.push(circle);
                }
            }
        }
    }
    found
}

/// The shortest walk from `start` back to `start` inside `part` (breadth first).
fn shortest_circle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    part: &[String],
    start: &String,
) -> Option<Vec<String>> {
    let members: BTreeSet<&String> = part.iter().collect();
    let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flatten() {
            if !members.contains(w) {
                continue;
            }
            if w == start {
                let mut chain = vec![v.clone()];
                let mut at = v;
                while at != start {
                    at = prev[at];
                    chain.push(at.clone());
                }
                chain.reverse();
                return Some(chain);
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
