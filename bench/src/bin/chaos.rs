//! The chaos test, long variant, with its figures printed: by default
//! 100,000 messages, 50 host SIGKILLs and 10 redis-server SIGKILLs.
//!
//!     cargo build --release -p switchyard-tests --bin switchyard-under-test
//!     cargo run --release -p switchyard-bench --bin chaos -- --messages 100000 --host-kills 50 --redis-kills 10

use anyhow::{Result, bail};
use clap::Parser;
use switchyard_tests::chaos::{self, ChaosOptions};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    #[arg(long, default_value_t = 50)]
    host_kills: usize,
    #[arg(long, default_value_t = 10)]
    redis_kills: usize,
    /// Messages produced per second.
    #[arg(long, default_value_t = 1_000)]
    rate: usize,
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let report = chaos::run(&ChaosOptions {
        messages: args.messages,
        host_kills: args.host_kills,
        redis_kills: args.redis_kills,
        seed,
        rate: args.rate,
    })
    .await?;
    println!("seed {seed}: {report}");
    if !report.lost.is_empty() || report.pending_left > 0 || !report.unexpected.is_empty() {
        bail!("the checker found a problem: {report}");
    }
    Ok(())
}
