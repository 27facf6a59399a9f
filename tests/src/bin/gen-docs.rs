//! Writes the man pages (clap_mangen) of all three binaries and the client's shell completions
//! (clap_complete) into OUTDIR/man and OUTDIR/completions, for the packages.
//! It must never need the daemons' config or run them: it only renders their clap definitions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

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

fn run(out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;

    let mut written = Vec::new();
    // Daemons: section 8 (system administration); the client: section 1 (user commands).
    written.extend(man_pages(ruroco_server::cli(), "8", &man)?);
    written.extend(man_pages(ruroco_commander::cli(), "8", &man)?);
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
