//! Writes the man pages (clap_mangen) of all three binaries and the client's shell completions
//! (clap_complete) into OUTDIR/man and OUTDIR/completions, for the packages. The daemons' main
//! pages add their own sections (KEYS, COMMANDS), CONFIGURATION, SIGNALS, ENVIRONMENT, FILES, EXIT STATUS, JOURNAL FIELDS, EXAMPLES
//! and SEE ALSO from their `manual::MANUAL` tables, which their tests hold equal to the code.
//! It must never need the daemons' config or run them: it only renders their definitions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;
use roff::{Roff, bold, italic, roman};
use ruroco_kit::manual::{FieldDefault, Manual};

/// Written into every man page's footer.
const SOURCE: &str = concat!("ruroco ", env!("CARGO_PKG_VERSION"));
const MANUAL: &str = "ruroco manual";

/// Render `cmd` as OUTDIR/<name>.<section>, then each visible subcommand as
/// OUTDIR/<name>-<sub>.<section>.
fn man_pages(cmd: clap::Command, section: &str, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    render(cmd, section, dir, &mut written)?;
    Ok(written)
}

fn render(
    cmd: clap::Command,
    section: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        render(sub, section, dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd)
        .section(section)
        .source(SOURCE)
        .manual(MANUAL);
    let path = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf)?;
    let mut file = std::fs::File::create(&path)?;
    file.write_all(&buf)?;
    written.push(path);
    Ok(())
}

/// CONFIGURATION: every table of the config file and every field with its type, default,
/// example and meaning.
fn configuration(roff: &mut Roff, m: &Manual) {
    roff.control("SH", ["CONFIGURATION"]);
    roff.text([
        roman("The configuration is a TOML 1.0 file, by default "),
        bold(m.config_path),
        roman(" (--config PATH reads another). Unknown fields are errors. Durations are strings such as \"30s\", \"5m\", \"1h\"."),
    ]);
    for table in m.config {
        let title = if table.header.is_empty() {
            "Top-level fields"
        } else {
            table.header
        };
        roff.control("SS", [title]);
        roff.text([roman(table.about)]);
        for f in table.fields {
            roff.control("TP", []);
            roff.text([bold(f.name), roman(" ("), italic(f.ty), roman(")")]);
            roff.text([roman(f.meaning)]);
            roff.control("br", []);
            let default = match f.default {
                FieldDefault::Required => "required".to_owned(),
                FieldDefault::Value(v) => format!("{} = {v}", f.name),
                FieldDefault::Absent(what) => format!("absent ({what})"),
            };
            roff.text([roman("Default: "), roman(default)]);
            roff.control("br", []);
            roff.text([
                roman("Example: "),
                roman(format!("{} = {}", f.name, f.example)),
            ]);
        }
    }
}

fn literal_block(roff: &mut Roff, text: &str) {
    roff.control("PP", []);
    roff.control("RS", ["4"]);
    roff.control("nf", []);
    for l in text.lines() {
        roff.text([roman(l)]);
    }
    roff.control("fi", []);
    roff.control("RE", []);
}

/// The main page of a daemon: clap_mangen's title, NAME, OPTIONS and SUBCOMMANDS, the shared
/// SYNOPSIS, and the sections of `m`.
fn daemon_page(cmd: clap::Command, m: &Manual, dir: &Path) -> std::io::Result<PathBuf> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .source(SOURCE)
        .manual(MANUAL);
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    let mut syn = Roff::new();
    ruroco_client::man::synopsis(&mut syn, &cmd);
    syn.to_writer(&mut out)?;
    man.render_description_section(&mut out)?;
    let mut desc = Roff::new();
    for para in m.description {
        desc.control("PP", []);
        desc.text([roman(*para)]);
    }
    desc.to_writer(&mut out)?;
    man.render_options_section(&mut out)?;
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    let mut roff = Roff::new();
    for (title, text) in m.sections {
        roff.control("SH", [*title]);
        roff.text([roman(*text)]);
    }
    configuration(&mut roff, m);
    let tag = |items: &[(&'static str, &'static str)]| -> Vec<(String, &'static str)> {
        items.iter().map(|(t, w)| ((*t).to_owned(), *w)).collect()
    };
    ruroco_client::man::tagged(&mut roff, "SIGNALS", &tag(m.signals));
    ruroco_client::man::tagged(&mut roff, "ENVIRONMENT", &tag(m.environment));
    ruroco_client::man::tagged(&mut roff, "FILES", &tag(m.files));
    let codes: Vec<(String, &str)> = m
        .exit_status
        .iter()
        .map(|(c, w)| (c.to_string(), *w))
        .collect();
    ruroco_client::man::tagged(&mut roff, "EXIT STATUS", &codes);
    ruroco_client::man::tagged(&mut roff, "JOURNAL FIELDS", &tag(m.journal_fields));
    roff.control("SS", ["Events (RUROCO_EVENT)"]);
    for (event, what) in m.events {
        roff.control("TP", []);
        roff.text([bold(*event)]);
        roff.text([roman(*what)]);
    }
    roff.control("SH", ["EXAMPLES"]);
    for (what, text) in m.examples {
        roff.control("PP", []);
        roff.text([roman(*what)]);
        literal_block(&mut roff, text);
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut also = Vec::new();
    for (i, page) in m.see_also.iter().enumerate() {
        let (name, section) = page.split_once('(').unwrap_or((page, ""));
        if i > 0 {
            also.push(roman(", "));
        }
        also.push(bold(name));
        also.push(roman(format!("({section}")));
    }
    roff.text(also);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    std::fs::write(&path, out)?;
    Ok(path)
}

fn run(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;

    let mut written = Vec::new();
    // Daemons: section 8 (system administration); the client: section 1 (user commands).
    // Their subcommands' pages first, then the main page over clap's.
    written.extend(man_pages(ruroco_server::cli::command(), "8", &man)?);
    written.extend(man_pages(ruroco_commander::cli(), "8", &man)?);
    daemon_page(
        ruroco_server::cli::command(),
        &ruroco_server::manual::MANUAL,
        &man,
    )?;
    daemon_page(
        ruroco_commander::cli(),
        &ruroco_commander::manual::MANUAL,
        &man,
    )?;
    // The client's pages add EXIT STATUS, FILES, ENVIRONMENT and EXAMPLES and a synopsis with
    // each option's argument (ruroco_client::man).
    let meta = ruroco_client::man::ManMeta {
        section: "1",
        source: SOURCE,
        manual: MANUAL,
    };
    for (name, roff) in ruroco_client::man::pages(&meta)? {
        let path = man.join(name);
        std::fs::write(&path, roff)?;
        written.push(path);
    }

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = ruroco_client::command();
        written.push(clap_complete::generate_to(
            shell,
            &mut cmd,
            "ruroco-client",
            &completions,
        )?);
    }
    Ok(written)
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: gen-docs OUTDIR   (writes OUTDIR/man/*.[18] and OUTDIR/completions/*)");
        return ExitCode::from(64);
    };
    match run(Path::new(&out)) {
        Ok(written) => {
            for path in written {
                println!("{}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "gen-docs: cannot write into {}: {e}",
                Path::new(&out).display()
            );
            ExitCode::from(74)
        }
    }
}
