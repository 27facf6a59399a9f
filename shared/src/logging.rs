//! Daemon logging: structured tracing events to journald when stderr is the journal
//! (`JOURNAL_STREAM` matches stderr), else compact `key=value` lines on stderr.
//! Field `event` becomes `RUROCO_EVENT` in the journal, `reason` `RUROCO_REASON`, and so on.
//! Never logs key material: callers pass key ids only.

use std::os::unix::fs::MetadataExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where log events went, for the first log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    Stderr,
}

/// True when systemd connected stderr to the journal (`JOURNAL_STREAM=dev:ino` of fd 2).
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

fn level() -> LevelFilter {
    match std::env::var("RUROCO_LOG").as_deref() {
        Ok("error") => LevelFilter::ERROR,
        Ok("warn") => LevelFilter::WARN,
        Ok("debug") => LevelFilter::DEBUG,
        Ok("trace") => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    }
}

/// Install the global subscriber; `identifier` is the syslog identifier (binary name).
/// `RUROCO_LOG` (error|warn|info|debug|trace) sets the level, default info.
pub fn init(identifier: &str) -> Sink {
    if stderr_is_journal() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(Some("RUROCO".to_owned()))
                .with_syslog_identifier(identifier.to_owned());
            if tracing_subscriber::registry()
                .with(level())
                .with(layer)
                .try_init()
                .is_ok()
            {
                return Sink::Journald;
            }
        }
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .without_time();
    let _ = tracing_subscriber::registry()
        .with(level())
        .with(fmt)
        .try_init();
    Sink::Stderr
}
