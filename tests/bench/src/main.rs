//! `bench`: measures ruroco-server and ruroco-commander side by side with a bare receive loop
//! (the ceiling) in one run, prints a table and writes JSON: the options make a `plan`,
//! `measure` runs it and collects raw numbers, `report` judges and prints them. A benchmark,
//! never a test: it exits 0 whatever the numbers are, non-zero only when something broke. It
//! must never flood anything but loopback sockets it started itself.

mod load;
mod measure;
mod plan;
mod report;
mod rig;
mod sink;
mod stats;

use clap::Parser;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmark ruroco-server and ruroco-commander against a bare UDP receive loop"
)]
struct Args {
    /// Tiny durations and counts (CI): checks that the benchmark runs, measures nothing useful.
    #[arg(long)]
    smoke: bool,
    /// Where to write the JSON results (default: <target>/bench.json).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Seconds each flood lasts (default 3; 0.2 with --smoke).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Rounds of ceiling + floods (default 3; 1 with --smoke); medians are reported.
    #[arg(long, value_name = "N")]
    rounds: Option<usize>,
    /// Datagrams each distinct source sends per turn (one GSO message) in the
    /// distinct-source floods.
    #[arg(long, default_value_t = 8, value_name = "N")]
    per_source: usize,
    /// Sender threads for the floods.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Only measure the ceiling (and the sender's offered rate), for tuning the load generator.
    #[arg(long)]
    ceiling_only: bool,
    /// Only the ceiling and these single-source floods (comma-separated STATUS= counters),
    /// nothing else: for comparing two builds on one flood.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FLOOD")]
    only: Vec<plan::Kind>,
    /// Record a `perf` profile (cpu-clock, call graphs) of the server during each flood of
    /// the first round, into <target>/bench-perf-<counter or sources-N>.data.
    #[arg(long)]
    perf: bool,
    /// Internal: run as the ceiling receiver with this SO_RCVBUF.
    #[arg(long, hide = true, value_name = "BYTES")]
    sink: Option<usize>,
}

fn main() {
    let args = Args::parse();
    if let Some(rcvbuf) = args.sink {
        if let Err(e) = sink::main(rcvbuf) {
            eprintln!("bench --sink: {e}");
            std::process::exit(74);
        }
        return;
    }
    if let Err(e) = run(&args) {
        eprintln!("bench: {e}");
        std::process::exit(70);
    }
}

fn run(args: &Args) -> rig::R<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: the server is started as root and switches to nobody".into());
    }
    let plan = plan::Plan::new(&plan::Options {
        smoke: args.smoke,
        duration: args.duration,
        rounds: args.rounds,
        per_source: args.per_source,
        threads: args.threads,
        perf: args.perf,
        only: args.only.clone(),
    });
    let json_path = match &args.json {
        Some(p) => p.clone(),
        None => rig::bin_dir()?
            .parent()
            .map(|t| t.join("bench.json"))
            .unwrap_or_else(|| PathBuf::from("bench.json")),
    };
    if args.ceiling_only {
        let doc = measure::ceiling_only(&plan)?;
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    let raw = measure::run(&plan)?;
    let rows = report::rows(&raw)?;
    report::print(&raw, &rows, plan.smoke);
    let doc = report::json(&plan, &raw, &rows)?;
    let text = serde_json::to_string_pretty(&doc).map_err(|e| format!("json: {e}"))?;
    std::fs::write(&json_path, text + "\n")
        .map_err(|e| format!("write {}: {e}", json_path.display()))?;
    println!("\nJSON: {}", json_path.display());
    Ok(())
}
