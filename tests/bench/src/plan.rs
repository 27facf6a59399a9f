//! What one benchmark run measures and how long, decided from the options alone: durations,
//! counts, rounds, and which single-source floods. Pure; it must never start, send or read
//! anything.

use std::time::Duration;

/// A single-source flood, named by the server's STATUS= counter it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Datagrams one byte short (93 B).
    #[value(name = "bad_length")]
    BadLength,
    /// Random datagrams of the right length with a key id the server does not have.
    #[value(name = "unknown_key")]
    UnknownKey,
    /// The known key id with a random IV, tag and body: one AEAD attempt each.
    #[value(name = "bad_tag")]
    BadTag,
    /// Copies of one valid datagram, accepted once before the rounds.
    #[value(name = "duplicate")]
    Duplicate,
}

impl Kind {
    /// In the order of the table.
    pub const ALL: [Kind; 4] = [
        Kind::BadLength,
        Kind::UnknownKey,
        Kind::BadTag,
        Kind::Duplicate,
    ];

    /// The table's name for it (the row adds " flood").
    pub fn name(self) -> &'static str {
        match self {
            Kind::BadLength => "wrong length (93 B)",
            Kind::UnknownKey => "unknown key id",
            Kind::BadTag => "known key id, bad tag",
            Kind::Duplicate => "replay of one valid datagram",
        }
    }

    /// The server's STATUS= counter each of its datagrams moves.
    pub fn counter(self) -> &'static str {
        match self {
            Kind::BadLength => "bad_length",
            Kind::UnknownKey => "unknown_key",
            Kind::BadTag => "bad_tag",
            Kind::Duplicate => "duplicate",
        }
    }

    /// The least rate (or cost) ratio to the ceiling the project aims for, if any.
    pub fn target(self) -> Option<f64> {
        match self {
            Kind::UnknownKey => Some(0.7),
            Kind::BadTag => Some(0.5),
            Kind::BadLength | Kind::Duplicate => None,
        }
    }
}

/// Sizes and contents of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub smoke: bool,
    pub flood: Duration,
    pub idle: Duration,
    pub valid: usize,
    pub baseline_writes: usize,
    pub latency_samples: usize,
    pub sources: [u32; 2],
    pub reps: usize,
    pub threads: usize,
    pub per_source: usize,
    pub perf: bool,
    /// The single-source floods of each round, in table order.
    pub kinds: Vec<Kind>,
    /// Everything besides the ceiling and `kinds`: idle, distinct sources, valid datagrams,
    /// latency, the shipped-limits rows. Off with `--only`.
    pub full: bool,
}

/// The options that shape a plan (the command line's, without the output path).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub smoke: bool,
    pub duration: Option<f64>,
    pub rounds: Option<usize>,
    pub per_source: usize,
    pub threads: usize,
    pub perf: bool,
    pub only: Vec<Kind>,
}

impl Plan {
    pub fn new(o: &Options) -> Self {
        let (flood, idle, valid, baseline_writes, latency_samples, sources, reps) = if o.smoke {
            (o.duration.unwrap_or(0.2), 1, 200, 20, 5, [1_000, 10_000], 1)
        } else {
            (
                o.duration.unwrap_or(3.0),
                10,
                5_000,
                300,
                100,
                [10_000, 1_000_000],
                3,
            )
        };
        let full = o.only.is_empty();
        Self {
            smoke: o.smoke,
            flood: Duration::from_secs_f64(flood),
            idle: Duration::from_secs(idle),
            valid,
            baseline_writes,
            latency_samples,
            sources,
            reps: o.rounds.unwrap_or(reps),
            threads: o.threads,
            per_source: o.per_source,
            perf: o.perf,
            kinds: Kind::ALL
                .into_iter()
                .filter(|k| full || o.only.contains(k))
                .collect(),
            full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            per_source: 8,
            threads: 1,
            ..Options::default()
        }
    }

    #[test]
    fn a_full_run_has_every_flood_and_three_rounds_of_three_seconds() {
        let p = Plan::new(&opts());
        assert!(p.full);
        assert_eq!(p.kinds, Kind::ALL);
        assert_eq!((p.reps, p.flood), (3, Duration::from_secs(3)));
        assert_eq!((p.valid, p.latency_samples), (5_000, 100));
        assert_eq!(p.sources, [10_000, 1_000_000]);
    }

    #[test]
    fn smoke_is_one_short_round_and_options_override_it() {
        let mut o = opts();
        o.smoke = true;
        let p = Plan::new(&o);
        assert_eq!((p.reps, p.flood), (1, Duration::from_millis(200)));
        assert_eq!(p.sources, [1_000, 10_000]);
        o.duration = Some(2.0);
        o.rounds = Some(2);
        let p = Plan::new(&o);
        assert_eq!((p.reps, p.flood), (2, Duration::from_secs(2)));
    }

    #[test]
    fn only_keeps_the_named_floods_in_table_order_and_drops_the_rest() {
        let mut o = opts();
        o.only = vec![Kind::Duplicate, Kind::BadTag];
        let p = Plan::new(&o);
        assert!(!p.full);
        assert_eq!(p.kinds, [Kind::BadTag, Kind::Duplicate]);
    }

    #[test]
    fn the_targets_are_the_projects() {
        assert_eq!(Kind::BadTag.target(), Some(0.5));
        assert_eq!(Kind::UnknownKey.target(), Some(0.7));
        assert_eq!(Kind::BadTag.counter(), "bad_tag");
    }
}
