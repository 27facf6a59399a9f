//! Daemon logging: structured tracing events to journald when stderr is the journal
//! (`JOURNAL_STREAM` matches stderr), else one logfmt line per event on stderr.
//!
//! Journal: the message is `MESSAGE`, field `event` becomes `RUROCO_EVENT`, `reason`
//! `RUROCO_REASON`, and so on (tracing-journald). Stderr: logfmt as written by the
//! `tracing-logfmt` crate, `ts=<RFC 3339 UTC> level=<error|warn|info|debug|trace>
//! message=<message> <field>=<value>...`; a value holding a space, `=`, `"` or a control character
//! is double-quoted with Rust's `escape_debug` escapes (`\"`, `\\`, `\n`), so every line splits
//! into key=value pairs. Never logs key material: callers pass key ids only.

use std::os::unix::fs::MetadataExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where [`init`] sends log events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The systemd journal, natively with fields (stderr is the journal stream).
    Journald,
    /// Standard error, one logfmt line per event.
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
/// `RUROCO_LOG` (error|warn|info|debug|trace) sets the level, default info; an unknown value
/// is info. Journald is used when `JOURNAL_STREAM` names stderr (sd_journal_stream_fd(3)) and
/// the journal socket can be opened, else stderr. Never fails: a second call, or a subscriber
/// already installed, leaves the first in place and reports the sink it would have used.
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
    let _ = tracing_subscriber::registry()
        .with(level())
        .with(stderr_layer(std::io::stderr))
        .try_init();
    Sink::Stderr
}

/// The logfmt layer used on stderr, writing to `writer` (stderr in the daemons, a buffer in
/// tests): timestamp, level and message first, then the event's fields; no target, spans or
/// colour.
pub(crate) fn stderr_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + 'static,
{
    tracing_logfmt::builder()
        .with_target(false)
        .with_span_name(false)
        .with_span_path(false)
        .layer()
        .with_writer(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_or(Ok(0), |mut v| {
                v.extend_from_slice(b);
                Ok(b.len())
            })
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn values_with_spaces_quotes_and_equals_are_quoted() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::registry().with(stderr_layer(move || w.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(
                event = "output",
                line = %"hello from 127.0.0.1",
                status = %"received=5 accepted=1",
                quote = %"say \"hi\"",
                count = 3u64,
                "rejected bad_tag from 192.0.2.1 count=3"
            );
        });
        let out = String::from_utf8(buf.0.lock().map(|v| v.clone()).unwrap_or_default())
            .unwrap_or_default();
        let line = out.trim_end();
        assert!(line.starts_with("ts="), "{line}");
        let rest = &line[line.find(" level=").unwrap_or(0)..];
        assert_eq!(
            rest,
            r#" level=warn message="rejected bad_tag from 192.0.2.1 count=3" event=output line="hello from 127.0.0.1" status="received=5 accepted=1" quote="say \"hi\"" count=3"#
        );
    }
}
