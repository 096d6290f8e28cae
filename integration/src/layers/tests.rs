use super::*;

fn file(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: path.into(),
        text: text.into(),
    }
}

fn messages(files: &[SourceFile]) -> Vec<String> {
    check(files).into_iter().map(|v| v.message).collect()
}

#[test]
fn the_operator_keeps_its_layers_circles_and_sizes() {
    let root = crate::workspace::repo_path("");
    let files = read_sources(&root).expect("src/");
    assert!(files.len() > 50, "read only {} files", files.len());
    let refused = messages(&files);
    assert!(
        refused.is_empty(),
        "{} violations of the layering rule (docs/architecture.md, \"Layers\"):\n{}",
        refused.len(),
        refused.join("\n")
    );
}

#[test]
fn an_import_into_a_higher_layer_is_refused() {
    let found = messages(&[
        file("src/lib.rs", "pub mod model;\npub mod controller;\n"),
        file("src/model/mod.rs", "use crate::controller::Context;\n"),
        file("src/controller/mod.rs", "use crate::model::Desk;\n"),
    ]);
    assert!(
        found.iter().any(|m| m
            .starts_with("layer: src/model/mod.rs:1: `model` (foundation) imports `controller`")),
        "{found:?}"
    );
}

#[test]
fn a_circle_between_modules_is_refused_even_inside_one_layer() {
    let found = messages(&[
        file(
            "src/policy/mod.rs",
            "use crate::metrics::{Metrics, x::Y};\n",
        ),
        file("src/metrics.rs", "fn f() { crate::policy::load(); }\n"),
    ]);
    assert!(
        found.contains(
            &"module circle: metrics → policy (src/metrics.rs:1), policy → metrics (src/policy/mod.rs:1)"
                .to_string()
        ),
        "{found:?}"
    );
}

#[test]
fn a_circle_between_files_of_a_folder_is_refused() {
    let found = messages(&[
        file("src/admission/mod.rs", "mod a;\nmod b;\npub use a::A;\n"),
        file("src/admission/a.rs", "use super::b::B;\n"),
        file("src/admission/b.rs", "use super::{a::A};\n"),
    ]);
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("file circle: src/admission/a.rs:1 → src/admission/b.rs")),
        "{found:?}"
    );
    assert!(!found.iter().any(|m| m.contains("mod.rs:3 →")), "{found:?}");
}

#[test]
fn test_code_comments_and_strings_are_not_imports() {
    let found = messages(&[
        file(
            "src/model/mod.rs",
            "// crate::controller::x\nconst S: &str = \"crate::controller::y\";\n\
             #[cfg(test)]\nmod tests;\n#[cfg(test)]\nmod inline { use crate::controller::z; }\n",
        ),
        file("src/model/tests.rs", "use crate::controller::w;\n"),
        file("src/controller/mod.rs", ""),
    ]);
    assert_eq!(found, Vec::<String>::new());
}

#[test]
fn long_functions_and_files_are_refused_outside_tests() {
    let body = "    let x = 1;\n".repeat(MAX_FN_LINES);
    let long_fn = format!("fn long() {{\n{body}}}\n");
    let many = "const A: u8 = 1;\n".repeat(MAX_FILE_LINES + 1);
    let found = messages(&[
        file(
            "src/text.rs",
            &format!("{long_fn}#[cfg(test)]\nmod tests {{ {long_fn} }}\n"),
        ),
        file("src/heap.rs", &format!("// a comment\n\n{many}")),
    ]);
    assert_eq!(
        found,
        vec![
            format!(
                "size: src/heap.rs has {} lines of code (over {MAX_FILE_LINES})",
                MAX_FILE_LINES + 1
            ),
            format!(
                "size: src/text.rs:1: fn long has {} lines of code (over {MAX_FN_LINES})",
                MAX_FN_LINES + 2
            ),
        ]
    );
}

#[test]
fn a_module_in_no_layer_is_named() {
    let found = messages(&[
        file("src/gadget.rs", "use crate::model::Desk;\n"),
        file("src/model/mod.rs", ""),
    ]);
    assert!(
        found.iter().any(|m| m.contains("`gadget` is in no layer")),
        "{found:?}"
    );
}

#[test]
fn raw_strings_lifetimes_and_chars_are_read_as_such() {
    let code = strip("fn f<'a>(x: &'a str) -> char { let _ = r#\"crate::a\"#; '\"' }\n");
    assert!(!code.contains("crate::a"), "{code}");
    assert!(code.contains("fn f<'a>(x: &'a str)"), "{code}");
    assert!(code.contains('}'), "{code}");
}
