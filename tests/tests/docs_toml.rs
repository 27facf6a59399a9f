//! Every TOML snippet of the docs is valid TOML 1.0, and the shipped example configs (with and
//! without their commented-out examples) pass the daemons' own config parsers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ```toml blocks of a Markdown text: (line of the opening fence, text).
fn toml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start();
        match &mut open {
            None if fence.starts_with("```toml") => open = Some((i + 1, String::new())),
            Some(_) if fence.starts_with("```") => blocks.extend(open.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(open.is_none(), "an unclosed ```toml block");
    blocks
}

/// Every `*.md` file of the repository (hidden directories, `target` and `node_modules`
/// skipped), sorted.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    walk(&path, out);
                }
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo(), &mut files);
    files.sort();
    files
}

#[test]
fn every_markdown_file_is_checked() {
    let files = markdown_files();
    for known in [
        "README.md",
        "SECURITY.md",
        "CHANGELOG.md",
        "docs/grants.md",
        "packaging/README.md",
        "server/README.md",
        "commander/README.md",
        "client/README.md",
    ] {
        let path = repo().join(known);
        if path.exists() {
            assert!(files.contains(&path), "{known} is not checked: {files:?}");
        }
    }
}

fn toml_1_0_parse(text: &str, what: &str) {
    if let Err(e) = text.parse::<toml_1_0::Table>() {
        panic!("{what}: not valid TOML 1.0: {e}\n{text}");
    }
}

fn server_parse(text: &str, what: &str) {
    toml_1_0_parse(text, what);
    if let Err(e) = ruroco_server::config::Config::parse(text, Path::new(what)) {
        panic!("{what}: ruroco-server refuses it: {e}\n{text}");
    }
}

fn commander_parse(text: &str, what: &str) {
    toml_1_0_parse(text, what);
    if let Err(e) = ruroco_commander::config::Config::parse(text, Path::new(what)) {
        panic!("{what}: ruroco-commander refuses it: {e}\n{text}");
    }
}

#[test]
fn every_toml_block_of_the_docs_is_valid_toml() {
    let mut seen = 0;
    for file in markdown_files() {
        let md = std::fs::read_to_string(&file).unwrap();
        for (line, text) in toml_blocks(&md) {
            let what = format!("{}:{line}", file.display());
            toml_1_0_parse(&text, &what);
            // A snippet of one of the daemons' files must also pass that daemon's parser.
            if text.lines().any(|l| l.starts_with("ips =")) {
                server_parse(&text, &what);
            }
            if text.lines().any(|l| l.starts_with("[commands")) {
                commander_parse(&text, &what);
            }
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "found only {seen} ```toml blocks: is the extraction broken?"
    );
}

#[test]
fn toml_1_0_is_what_is_checked() {
    let split_inline_table = "a = { b = 1,\n      c = 2 }\n";
    assert!(split_inline_table.parse::<toml_1_0::Table>().is_err());
    assert!("a = { b = 1, c = 2 }\n".parse::<toml_1_0::Table>().is_ok());
}

#[test]
fn block_extraction_finds_indented_and_plain_blocks() {
    let md = "a\n```toml\nx = 1\n```\n  ```toml\n  y = 2\n  ```\n```sh\nz\n```\n";
    let b = toml_blocks(md);
    assert_eq!(b, [(2, "x = 1\n".to_owned()), (5, "  y = 2\n".to_owned())]);
}

/// `text` with every commented-out setting (`#key = ...`, `#[table]`) made live.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' ')) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_shipped_example_configs_parse_as_shipped_and_with_every_example_enabled() {
    let server = std::fs::read_to_string(repo().join("packaging/server.toml")).unwrap();
    server_parse(&server, "packaging/server.toml");
    let all = uncommented(&server);
    assert!(all.contains("\n[keys.laptop]"), "{all}");
    server_parse(&all, "packaging/server.toml, examples enabled");

    let commander = std::fs::read_to_string(repo().join("packaging/commander.toml")).unwrap();
    commander_parse(&commander, "packaging/commander.toml");
    let all = uncommented(&commander);
    for name in ["open_ssh", "close_ssh", "restart_web"] {
        assert!(all.contains(&format!("\n[commands.{name}]")), "{all}");
    }
    commander_parse(&all, "packaging/commander.toml, examples enabled");
}
