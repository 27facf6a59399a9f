//! What one `send` uses: each value from the command line, else the profile, else a built-in
//! default, remembering which; `list` prints the same resolution. Never reads keys or sends.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{DEFAULT_DELAY_MS, SendArgs};
use crate::config::{Config, Profile};
use crate::send::{self, AddrError, AddrSpec, Family, Target};
use crate::wait::DEFAULT_WAIT_TIMEOUT;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A flag on the command line.
    Flag,
    /// The profile in client.toml.
    Profile,
    /// The profile's key path, relative to the config file's directory.
    ProfileRelative,
    /// Built in.
    Default,
    /// Nowhere: the value is missing.
    Unset,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "command line",
            Source::Profile => "profile",
            Source::ProfileRelative => "profile (relative to the config file)",
            Source::Default => "default",
            Source::Unset => "not set",
        })
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

fn pick<T>(flag: Option<T>, profile: Option<T>, default: Option<T>) -> Sourced<Option<T>> {
    match (flag, profile, default) {
        (Some(v), _, _) => Sourced {
            value: Some(v),
            source: Source::Flag,
        },
        (None, Some(v), _) => Sourced {
            value: Some(v),
            source: Source::Profile,
        },
        (None, None, Some(v)) => Sourced {
            value: Some(v),
            source: Source::Default,
        },
        (None, None, None) => Sourced {
            value: None,
            source: Source::Unset,
        },
    }
}

/// Everything a send needs, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub address: Sourced<Vec<Target>>,
    pub key: Sourced<Option<PathBuf>>,
    pub command: Sourced<Option<String>>,
    pub family: Sourced<Option<Family>>,
    pub permissive: Sourced<Option<bool>>,
    pub ip: Sourced<Option<IpAddr>>,
    pub delay: Sourced<Option<Duration>>,
    pub wait: Sourced<Option<u16>>,
    pub wait_timeout: Sourced<Option<Duration>>,
}

/// The command-line side of a resolution (a `SendArgs`, or nothing for `list`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `-a` values as written: one without a port takes `port`, the profile's, or the default.
    pub address: Vec<AddrSpec>,
    /// `--port`: the server port of addresses that name none.
    pub port: Option<u16>,
    pub key: Option<PathBuf>,
    pub command: Option<String>,
    pub family: Option<Family>,
    pub permissive: Option<bool>,
    pub ip: Option<IpAddr>,
    pub delay: Option<Duration>,
    pub wait: Option<u16>,
    pub no_wait: bool,
    pub wait_timeout: Option<Duration>,
}

impl Overrides {
    /// The overrides `send`'s flags make (addresses parsed here, so a typo fails early).
    pub fn from_args(a: &SendArgs) -> Result<Self, AddrError> {
        Ok(Self {
            address: a
                .address
                .iter()
                .map(|s| send::parse_spec(s))
                .collect::<Result<_, _>>()?,
            port: a.port,
            key: a.key.clone(),
            command: a.command.clone(),
            family: match (a.ipv4, a.ipv6) {
                (true, _) => Some(Family::V4),
                (_, true) => Some(Family::V6),
                _ => None,
            },
            permissive: match (a.permissive, a.strict) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            ip: a.ip,
            delay: a.delay.map(Duration::from_millis),
            wait: a.wait,
            no_wait: a.no_wait,
            wait_timeout: a.wait_timeout,
        })
    }
}

/// Resolve flags over a profile over defaults.
pub fn resolve(o: &Overrides, p: Option<&Profile>) -> Resolved {
    // An address without a port takes --port, else the profile's port, else the default,
    // whether the address itself came from -a or from the profile.
    let port = o
        .port
        .or(p.and_then(|p| p.port))
        .unwrap_or(send::DEFAULT_PORT);
    let with_port = |specs: &[AddrSpec]| -> Vec<Target> {
        specs.iter().map(|a| a.with_default_port(port)).collect()
    };
    let address = if !o.address.is_empty() {
        Sourced {
            value: with_port(&o.address),
            source: Source::Flag,
        }
    } else if let Some(p) = p.filter(|p| !p.address.is_empty()) {
        Sourced {
            value: with_port(&p.address),
            source: Source::Profile,
        }
    } else {
        Sourced {
            value: Vec::new(),
            source: Source::Unset,
        }
    };
    let mut key = pick(o.key.clone(), p.and_then(|p| p.key.clone()), None);
    if key.source == Source::Profile && p.is_some_and(|p| p.key_relative) {
        key.source = Source::ProfileRelative;
    }
    let wait = if o.no_wait {
        Sourced {
            value: None,
            source: Source::Flag,
        }
    } else {
        pick(o.wait, p.and_then(|p| p.wait), None)
    };
    Resolved {
        address,
        key,
        command: pick(o.command.clone(), p.and_then(|p| p.command.clone()), None),
        family: pick(o.family, p.and_then(|p| p.family), Some(Family::Any)),
        permissive: pick(o.permissive, p.and_then(|p| p.permissive), Some(false)),
        ip: pick(o.ip, p.and_then(|p| p.ip), None),
        delay: pick(
            o.delay,
            p.and_then(|p| p.delay),
            Some(Duration::from_millis(DEFAULT_DELAY_MS)),
        ),
        wait,
        wait_timeout: pick(
            o.wait_timeout,
            p.and_then(|p| p.wait_timeout),
            Some(DEFAULT_WAIT_TIMEOUT),
        ),
    }
}

fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The rows `list` prints for one resolution: (field, value, source).
pub fn rows(r: &Resolved) -> Vec<(&'static str, String, Source)> {
    let addr = if r.address.value.is_empty() {
        "(none: give -a HOST)".to_owned()
    } else {
        r.address
            .value
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        ("address", addr, r.address.source),
        (
            "key",
            r.key.value.as_ref().map_or_else(
                || "(none: give -k KEYFILE)".to_owned(),
                |k| k.display().to_string(),
            ),
            r.key.source,
        ),
        (
            "command",
            r.command
                .value
                .clone()
                .unwrap_or_else(|| "(none: give -c NAME)".to_owned()),
            r.command.source,
        ),
        (
            "family",
            r.family
                .value
                .unwrap_or(Family::Any)
                .config_name()
                .to_owned(),
            r.family.source,
        ),
        (
            "permissive",
            if r.permissive.value == Some(true) {
                "yes".to_owned()
            } else {
                "no (strict)".to_owned()
            },
            r.permissive.source,
        ),
        (
            "ip",
            r.ip.value.map_or_else(
                || "(none: the datagram's source address)".to_owned(),
                |ip| ip.to_string(),
            ),
            r.ip.source,
        ),
        (
            "delay",
            r.delay.value.map(fmt_duration).unwrap_or_default(),
            r.delay.source,
        ),
        (
            "wait",
            r.wait
                .value
                .map_or_else(|| "(no: send only)".to_owned(), |p| format!("TCP port {p}")),
            r.wait.source,
        ),
        (
            "wait_timeout",
            r.wait_timeout.value.map(fmt_duration).unwrap_or_default(),
            r.wait_timeout.source,
        ),
    ]
}

/// The text of `ruroco-client list [NAME]`.
pub fn list_text(cfg: &Config, only: Option<&str>) -> Result<String, crate::config::ConfigError> {
    let path = cfg.path.display();
    let profiles: Vec<&Profile> = match only {
        Some(name) => vec![cfg.profile(name)?],
        None => cfg.profiles.values().collect(),
    };
    let mut out = String::new();
    if !cfg.exists {
        out.push_str(&format!(
            "no profiles: {path} does not exist (a [servers.NAME] table there makes one; see `man ruroco-client`)\n"
        ));
        return Ok(out);
    }
    if profiles.is_empty() {
        out.push_str(&format!(
            "no profiles in {path} (add a [servers.NAME] table)\n"
        ));
        return Ok(out);
    }
    out.push_str(&format!("profiles in {path}:\n"));
    for p in profiles {
        out.push_str(&format!("\n{}\n", p.name));
        let r = resolve(&Overrides::default(), Some(p));
        let rows = rows(&r);
        let width = rows.iter().map(|(_, v, _)| v.len()).max().unwrap_or(0);
        for (field, value, source) in rows {
            out.push_str(&format!("  {field:<13}{value:<width$}  {source}\n"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg() -> Config {
        Config::parse(
            "[servers.home]\naddress = \"h.example\"\nkey = \"h.key\"\ncommand = \"open_ssh\"\n\
             permissive = true\nwait = 22\n[servers.bare]\n",
            Path::new("/c/client.toml"),
            None,
        )
        .unwrap()
    }

    #[test]
    fn flags_override_the_profile_which_overrides_defaults() {
        let c = cfg();
        let p = c.profile("home").unwrap();
        let r = resolve(&Overrides::default(), Some(p));
        assert_eq!(r.command.value.as_deref(), Some("open_ssh"));
        assert_eq!(r.command.source, Source::Profile);
        assert_eq!(r.key.value, Some(PathBuf::from("/c/h.key")));
        assert_eq!(r.key.source, Source::ProfileRelative);
        assert_eq!(r.permissive.value, Some(true));
        assert_eq!(r.delay.source, Source::Default);
        assert_eq!(r.wait.value, Some(22));

        let o = Overrides {
            address: vec![send::parse_spec("10.0.0.1:5").unwrap()],
            key: Some(PathBuf::from("/other.key")),
            command: Some("hello".to_owned()),
            family: Some(Family::V4),
            permissive: Some(false),
            delay: Some(Duration::from_millis(1)),
            no_wait: true,
            ..Overrides::default()
        };
        let r = resolve(&o, Some(p));
        assert_eq!(r.address.value[0].to_string(), "10.0.0.1:5");
        assert_eq!(r.address.source, Source::Flag);
        assert_eq!(r.key.value, Some(PathBuf::from("/other.key")));
        assert_eq!(r.command.value.as_deref(), Some("hello"));
        assert_eq!(r.command.source, Source::Flag);
        assert_eq!(r.permissive.value, Some(false));
        assert_eq!(r.family.value, Some(Family::V4));
        assert_eq!(r.wait.value, None);
        assert_eq!(r.wait.source, Source::Flag);
    }

    #[test]
    fn an_address_without_a_port_keeps_the_profiles_or_the_flags_port() {
        let c = Config::parse(
            "[servers.p]\naddress = \"h.example\"\nport = 80\n",
            Path::new("/c/client.toml"),
            None,
        )
        .unwrap();
        let p = c.profile("p").unwrap();
        let addr = |o: &Overrides| resolve(o, Some(p)).address.value[0].to_string();
        assert_eq!(addr(&Overrides::default()), "h.example:80");
        let a = |s: &str| Overrides {
            address: vec![send::parse_spec(s).unwrap()],
            ..Overrides::default()
        };
        // -a HOST keeps the profile's port; -a HOST:PORT names its own.
        assert_eq!(addr(&a("localhost")), "localhost:80");
        assert_eq!(addr(&a("localhost:9")), "localhost:9");
        assert_eq!(addr(&a("[::1]")), "[::1]:80");
        // --port wins over the profile's port, for -a and for the profile's addresses.
        let with_port = |mut o: Overrides| {
            o.port = Some(7);
            o
        };
        assert_eq!(addr(&with_port(a("localhost"))), "localhost:7");
        assert_eq!(addr(&with_port(Overrides::default())), "h.example:7");
        assert_eq!(addr(&with_port(a("localhost:9"))), "localhost:9");
        // Without a profile: --port, else the default.
        let r = resolve(&with_port(a("h")), None);
        assert_eq!(r.address.value[0].to_string(), "h:7");
        let r = resolve(&a("h"), None);
        assert_eq!(r.address.value[0].port, send::DEFAULT_PORT);
    }

    #[test]
    fn no_command_anywhere_stays_unset() {
        let c = cfg();
        let r = resolve(&Overrides::default(), Some(c.profile("bare").unwrap()));
        assert_eq!(r.command.value, None);
        assert_eq!(r.command.source, Source::Unset);
        let r = resolve(&Overrides::default(), None);
        assert_eq!(r.command.value, None);
    }

    #[test]
    fn list_shows_each_value_with_its_source() {
        let t = list_text(&cfg(), None).unwrap();
        assert!(t.contains("profiles in /c/client.toml"), "{t}");
        let home_line = |f: &str| {
            t.lines()
                .skip_while(|l| *l != "home")
                .find(|l| l.trim_start().starts_with(f))
                .unwrap_or_else(|| panic!("{f} not in {t}"))
                .to_owned()
        };
        assert!(home_line("command").contains("open_ssh"), "{t}");
        assert!(home_line("command").ends_with("profile"), "{t}");
        assert!(home_line("key").contains("/c/h.key"), "{t}");
        assert!(
            home_line("key").contains("relative to the config file"),
            "{t}"
        );
        assert!(home_line("delay").contains("50ms"), "{t}");
        assert!(home_line("delay").ends_with("default"), "{t}");
        assert!(t.contains("(none: give -c NAME)"), "{t}");
        let one = list_text(&cfg(), Some("bare")).unwrap();
        assert!(!one.contains("\nhome\n"), "{one}");
        assert!(list_text(&cfg(), Some("nope")).is_err());
    }
}
