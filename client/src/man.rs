//! The client's man pages: clap_mangen's sections from the clap definitions, a synopsis that
//! shows each option's argument, and EXIT STATUS, FILES, ENVIRONMENT and EXAMPLES written here.
//! Never renders `--help`'s exit-code block as a man section of its own.

use roff::{Roff, bold, italic, roman};
use std::io::Write;

use crate::cli::{self, ExitStatus};

/// Fields and headings a man page is rendered with.
#[derive(Debug, Clone)]
pub struct ManMeta<'a> {
    /// Manual section, e.g. "1".
    pub section: &'a str,
    /// Footer source, e.g. "ruroco 0.1.0".
    pub source: &'a str,
    /// Manual name, e.g. "ruroco manual".
    pub manual: &'a str,
}

const CLIENT_TOML_EXAMPLE: &str = "\
[servers.home]
address = \"home.example.org\"     # or a list: [\"198.51.100.7\", \"[2001:db8::7]:34020\"]
key = \"home.key\"                 # relative to this file's directory
command = \"open_ssh\"
wait = 22                        # send home: wait for port 22 to answer
# port = 34020, family = \"ipv4\", permissive = true, ip = \"203.0.113.7\",
# delay = \"50ms\", wait_timeout = \"5s\"";

const SSH_CONFIG_EXAMPLE: &str = "\
# ~/.ssh/config: knock, wait for port 22, and let ssh use that very connection
Host home
    HostName home.example.org
    ProxyCommand ruroco-client send home --quiet --wait %p --connect
    ProxyUseFdpass yes        # optional: the client passes the socket and exits
# --connect passes the socket when stdin and stdout are one Unix socket and stderr is not
# (OpenSSH's ProxyUseFdpass), else relays. Callers that put one socketpair on stdin and
# stdout but want a byte stream (socat EXEC) need --connect=relay; --connect=fdpass forces
# passing.";

/// Files the page of `sub` (`None`: the program) mentions.
fn files(sub: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let config = (
        "$XDG_CONFIG_HOME/ruroco/client.toml (else ~/.config/ruroco/client.toml)",
        "Profiles, one [servers.NAME] table each, with the fields address (a string or a list), port, key (relative to the file's directory, or ~/...), command, family (any, ipv4, ipv6), permissive, ip, delay, wait and wait_timeout. Unknown fields are errors. Must be a regular file owned by you (or root) and not writable by group or others. --config FILE reads another file.",
    );
    let counter = (
        "$XDG_STATE_HOME/ruroco/counter (else ~/.local/state/ruroco/counter)",
        "The replay counter, one decimal number, written atomically. The directory must be the user's own and not writable by others; the counter and its lock file counter.lock are never followed if they are symbolic links. --state-dir DIR uses another directory.",
    );
    let key = (
        "KEYFILE",
        "A key made by gen: one line of base64 (key id and AES-256 key), mode 0600. Refused when others may read it.",
    );
    match sub {
        Some("send") => vec![config, counter, key],
        Some("list") => vec![config],
        Some("reseed") => vec![counter],
        Some("gen") => vec![key],
        Some(_) => vec![],
        None => vec![config, counter, key],
    }
}

/// Environment variables the page of `sub` mentions.
fn environment(sub: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let cfg = (
        "XDG_CONFIG_HOME",
        "Directory of ruroco/client.toml when set to an absolute path.",
    );
    let state = (
        "XDG_STATE_HOME",
        "Directory of ruroco/counter when set to an absolute path.",
    );
    let home = (
        "HOME",
        "Fallback for both (~/.config, ~/.local/state), and ~ at the start of a profile's key path.",
    );
    match sub {
        Some("send") | None => vec![cfg, state, home],
        Some("list") => vec![cfg, home],
        Some("reseed") => vec![state, home],
        Some(_) => vec![],
    }
}

/// Examples of the page of `sub`: (what it does, the text to type or write).
fn examples(sub: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let gen_key = (
        "Make a key (copy it to the server's keys directory too):",
        "ruroco-client gen -o ~/.config/ruroco/home.key",
    );
    let one_off = (
        "Send without a profile:",
        "ruroco-client send -a home.example.org -k ~/.config/ruroco/home.key -c open_ssh",
    );
    let profile = (
        "A profile in ~/.config/ruroco/client.toml:",
        CLIENT_TOML_EXAMPLE,
    );
    let use_profile = (
        "Use it, overriding its command, and check that port 22 opened (exit 0 only if it answered):",
        "ruroco-client send home\nruroco-client send home -c open_https --wait 443",
    );
    let list = (
        "Show every profile and where each value comes from:",
        "ruroco-client list",
    );
    let ssh = (
        "One step for ssh (with or without ProxyUseFdpass):",
        SSH_CONFIG_EXAMPLE,
    );
    match sub {
        Some("send") => vec![one_off, profile, use_profile, ssh],
        Some("list") => vec![list],
        Some("gen") => vec![gen_key],
        Some("reseed") => vec![("Reset the counter to the clock:", "ruroco-client reseed")],
        Some("completions") => vec![(
            "Bash completion for the current user:",
            "ruroco-client completions bash > ~/.local/share/bash-completion/completions/ruroco-client",
        )],
        Some(_) => vec![],
        None => vec![gen_key, profile, use_profile, list, ssh],
    }
}

/// SYNOPSIS with each option's value name (clap_mangen leaves it out); also used for the
/// daemons' pages (`tests/src/bin/gen-docs.rs`).
pub fn synopsis(roff: &mut Roff, cmd: &clap::Command) {
    roff.control("SH", ["SYNOPSIS"]);
    let name = cmd.get_bin_name().unwrap_or_else(|| cmd.get_name());
    let mut line = vec![bold(name)];
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        if arg.is_positional() {
            continue;
        }
        let flag = match (arg.get_short(), arg.get_long()) {
            (Some(s), Some(l)) => format!("-{s}|--{l}"),
            (Some(s), None) => format!("-{s}"),
            (None, Some(l)) => format!("--{l}"),
            (None, None) => continue,
        };
        let takes_value = arg.get_action().takes_values();
        let required = arg.is_required_set();
        line.push(roman(if required { " " } else { " [" }));
        line.push(bold(flag));
        if takes_value {
            let names = arg
                .get_value_names()
                .map(|v| v.join(" "))
                .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
            let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
            if optional {
                line.push(roman("[="));
                line.push(italic(names));
                line.push(roman("]"));
            } else {
                line.push(roman(" "));
                line.push(italic(names));
            }
        }
        if !required {
            line.push(roman("]"));
        }
    }
    for arg in cmd.get_positionals().filter(|a| !a.is_hide_set()) {
        let names = arg
            .get_value_names()
            .map(|v| v.join(" "))
            .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
        if arg.is_required_set() {
            line.push(roman(" "));
            line.push(italic(names));
        } else {
            line.push(roman(" ["));
            line.push(italic(names));
            line.push(roman("]"));
        }
    }
    if cmd.has_subcommands() && cmd.is_subcommand_required_set() {
        line.push(roman(" "));
        line.push(italic("COMMAND"));
        line.push(roman(" [ARGS]"));
    } else if cmd.has_subcommands() {
        line.push(roman(" ["));
        line.push(italic("COMMAND"));
        line.push(roman(" [ARGS]]"));
    }
    roff.text(line);
}

/// A section `title` of tagged paragraphs (`.TP`): the tag in bold, then its text. Nothing
/// when `items` is empty.
pub fn tagged(roff: &mut Roff, title: &str, items: &[(String, &str)]) {
    if items.is_empty() {
        return;
    }
    roff.control("SH", [title]);
    for (tag, text) in items {
        roff.control("TP", []);
        roff.text([bold(tag.as_str())]);
        roff.text([roman(*text)]);
    }
}

fn extra_sections(sub: Option<&str>) -> Roff {
    let mut roff = Roff::new();
    let codes: Vec<(String, &str)> = cli::exit_statuses(sub)
        .iter()
        .map(|(c, w): &ExitStatus| (c.to_string(), *w))
        .collect();
    tagged(&mut roff, "EXIT STATUS", &codes);
    let files: Vec<(String, &str)> = files(sub)
        .into_iter()
        .map(|(f, w)| (f.to_owned(), w))
        .collect();
    tagged(&mut roff, "FILES", &files);
    let env: Vec<(String, &str)> = environment(sub)
        .into_iter()
        .map(|(e, w)| (e.to_owned(), w))
        .collect();
    tagged(&mut roff, "ENVIRONMENT", &env);
    let ex = examples(sub);
    if !ex.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (what, text) in ex {
            roff.control("PP", []);
            roff.text([roman(what)]);
            roff.control("PP", []);
            roff.control("RS", ["4"]);
            roff.control("nf", []);
            for l in text.lines() {
                roff.text([roman(l)]);
            }
            roff.control("fi", []);
            roff.control("RE", []);
        }
    }
    roff
}

/// Render one page: `cmd` is the program or one of its (built) subcommands, `sub` its name.
fn render_page(
    cmd: clap::Command,
    sub: Option<&str>,
    meta: &ManMeta<'_>,
) -> std::io::Result<(String, Vec<u8>)> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(meta.section)
        .source(meta.source)
        .manual(meta.manual);
    let file = man.get_filename();
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    let mut syn = Roff::new();
    synopsis(&mut syn, &cmd);
    syn.to_writer(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    extra_sections(sub).to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    out.flush()?;
    Ok((file, out))
}

/// Every page of the client: (file name such as `ruroco-client-send.1`, roff).
pub fn pages(meta: &ManMeta<'_>) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut top = cli::command().disable_help_subcommand(true);
    top.build();
    let mut pages = vec![render_page(top.clone(), None, meta)?];
    for sub in top.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name().to_owned();
        pages.push(render_page(sub.clone(), Some(&name), meta)?);
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<(String, String)> {
        let meta = ManMeta {
            section: "1",
            source: "ruroco test",
            manual: "ruroco manual",
        };
        pages(&meta)
            .unwrap()
            .into_iter()
            .map(|(n, b)| (n, String::from_utf8(b).unwrap()))
            .collect()
    }

    fn page(name: &str) -> String {
        all()
            .into_iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no page {name}"))
            .1
    }

    #[test]
    fn every_page_has_exit_status_and_no_extra() {
        let pages = all();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "ruroco-client.1",
            "ruroco-client-send.1",
            "ruroco-client-gen.1",
            "ruroco-client-list.1",
            "ruroco-client-reseed.1",
            "ruroco-client-completions.1",
        ] {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
        for (n, p) in &pages {
            assert!(p.contains(".SH \"EXIT STATUS\""), "{n}:\n{p}");
            assert!(!p.contains(".SH EXTRA"), "{n}:\n{p}");
            assert!(!p.contains("Exit status:"), "{n}:\n{p}");
        }
    }

    #[test]
    fn send_page_documents_files_environment_examples_and_arguments() {
        let p = page("ruroco-client-send.1");
        for needle in [
            ".SH FILES",
            ".SH ENVIRONMENT",
            ".SH EXAMPLES",
            "client.toml",
            "XDG_CONFIG_HOME",
            "ProxyCommand",
            "ProxyUseFdpass",
            "socat EXEC",
            "\\-\\-connect=relay",
            "\\-\\-wait",
            "\\fIFILE\\fR",
            "\\fIPORT\\fR",
            "\\fIPROFILE\\fR",
        ] {
            assert!(p.contains(needle), "{needle:?} not in:\n{p}");
        }
        assert!(p.contains("owned by you (or root) and not writable by group or others"));
        let g = page("ruroco-client-gen.1");
        assert!(!g.contains("state\\-dir"), "{g}");
        assert!(!g.contains("\\fB69\\fR"), "{g}");
        assert!(p.contains("\\fB69\\fR"), "{p}");
    }
}
