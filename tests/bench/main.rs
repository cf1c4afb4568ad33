//! Rowguard's benchmark: one command builds the dataset, starts Rowguard against it with a real
//! OIDC issuer, drives load over HTTP with `wrk`, replays the same SQL transactions through
//! `pgbench` at the same concurrency, and prints the comparison.
//!
//! `cargo run --release -p rowguard-tests --bin rowguard-bench -- --scales 10000,100000,1000000`

// The report is this program's output.
#![allow(clippy::print_stdout)]

mod dataset;
mod load;
mod peer;
mod replay;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use rowguard::dev::postgres::{LocalCluster, free_port};
use rowguard_tests::issuer::TestIssuer;

#[derive(Debug, Parser)]
#[command(about = "Rowguard vs. pgbench on the same transactions")]
struct Args {
    /// Patient counts to run at (the per-request cost should stay flat).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000000")]
    scales: Vec<u64>,
    /// Clinicians (each patient is on two care teams).
    #[arg(long, default_value_t = 1000)]
    clinicians: u64,
    /// Concurrent clients for both Rowguard and pgbench.
    #[arg(long, default_value_t = 8)]
    concurrency: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Which scenarios to run, separated by `;` (default: all); with `--costs`, also which
    /// comparisons (named by their first scenario).
    #[arg(long, value_delimiter = ';')]
    only: Vec<String>,
    /// Rounds per scenario: Rowguard and pgbench alternate, and the median run of each is shown.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Also measure what quotas (local and Redis) and tracing cost, each against the same gateway
    /// without them, side by side in alternating runs.
    #[arg(long)]
    costs: bool,
    /// Rowguard, pgbench and the peer reach PostgreSQL over its Unix socket instead of TCP on
    /// the loopback (the deployment with the database on the same host).
    #[arg(long)]
    unix_socket: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let rowguard = sibling_binary("rowguard-cli");
    assert!(
        rowguard.exists(),
        "build it first: cargo build --release -p rowguard-tests --bins"
    );
    for tool in ["wrk", "pgbench"] {
        assert!(
            which(tool).is_some()
                || rowguard::dev::postgres::server_bindir().is_some_and(|d| d.join(tool).exists()),
            "{tool} is needed (Debian: apt-get install wrk postgresql)"
        );
    }
    let issuer = TestIssuer::start().await;
    println!("# Rowguard benchmark\n");
    println!(
        "machine: {} cores, {}",
        num_cpus(),
        first_line("/proc/meminfo")
    );
    println!(
        "concurrency {}, {} s per measurement, {} clinicians\n",
        args.concurrency, args.duration, args.clinicians
    );
    println!(
        "| patients | scenario | Rowguard req/s | p50 ms | p99 ms | pgbench tps | pgbench p50 ms | pgbench p99 ms | ÷ pgbench | Rowguard CPU µs/req | Rowguard max RSS MB | seal lag p99 s | PostGraphile req/s | PostGraphile CPU µs/req | ÷ PostGraphile |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &patients in &args.scales {
        let dir =
            std::env::temp_dir().join(format!("rowguard-bench-{}-{patients}", std::process::id()));
        let cluster = LocalCluster::new(&dir).expect("server binaries");
        cluster.init().expect("initdb");
        let port = free_port().expect("port");
        cluster
            .start(
                port,
                &[
                    "shared_buffers=512MB",
                    "max_connections=200",
                    "synchronous_commit=off",
                    "jit=off",
                ],
            )
            .expect("start");
        let _stop = StopOnDrop(cluster.clone());
        let socket = args.unix_socket.then(|| cluster.data_dir().to_owned());
        let db = dataset::build(port, socket, patients, args.clinicians, issuer.url()).await;
        for scenario in load::SCENARIOS {
            if !args.only.is_empty() && !args.only.iter().any(|o| o == scenario.name) {
                continue;
            }
            let row = load::run(
                &rowguard,
                &issuer,
                &db,
                scenario,
                args.concurrency,
                Duration::from_secs(args.duration),
                args.rounds,
            )
            .await;
            let dash = || "—".to_owned();
            let pgbench = row.pgbench.map_or_else(
                || format!("{} | {} | {} | {}", dash(), dash(), dash(), dash()),
                |p| {
                    format!(
                        "{:.0} | {:.2} | {:.2} | {:.2}",
                        p.rps,
                        p.p50_ms,
                        p.p99_ms,
                        row.rowguard.rps / p.rps
                    )
                },
            );
            let peer = row.peer.map_or_else(
                || format!("{} | {} | {}", dash(), dash(), dash()),
                |(p, cpu)| format!("{:.0} | {cpu:.0} | {:.2}", p.rps, row.rowguard.rps / p.rps),
            );
            println!(
                "| {patients} | {} | {:.0} | {:.2} | {:.2} | {pgbench} | {:.0} | {:.1} | {} | {peer} |",
                scenario.name,
                row.rowguard.rps,
                row.rowguard.p50_ms,
                row.rowguard.p99_ms,
                row.cpu_us_per_request,
                row.max_rss_mb,
                row.seal_lag_p99_s.map_or_else(dash, |s| format!("{s:.2}")),
            );
        }
        if args.costs {
            println!(
                "\n| patients | with | without | with req/s | without req/s | with ÷ without | with CPU µs/req | without CPU µs/req |"
            );
            println!("|---:|---|---|---:|---:|---:|---:|---:|");
            for pair in load::COSTS {
                if !args.only.is_empty() && !args.only.iter().any(|o| o == pair[0].name) {
                    continue;
                }
                let [(with, with_cpu), (without, without_cpu)] = load::compare(
                    &rowguard,
                    &issuer,
                    &db,
                    pair,
                    args.concurrency,
                    Duration::from_secs(args.duration),
                    args.rounds,
                )
                .await;
                println!(
                    "| {patients} | {} | {} | {:.0} | {:.0} | {:.3} | {with_cpu:.0} | {without_cpu:.0} |",
                    pair[0].name,
                    pair[1].name,
                    with.rps,
                    without.rps,
                    with.rps / without.rps
                );
            }
        }
    }
}

/// Stops and deletes the benchmark's cluster however the run ends (a failed assertion too).
struct StopOnDrop(LocalCluster);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
        let _ = std::fs::remove_dir_all(self.0.data_dir());
    }
}

fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .expect("current exe")
        .with_file_name(name)
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(tool))
        .find(|p| p.exists())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_default()
}
