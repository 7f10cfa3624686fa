//! For `scripts/bench`: waits until a consumer group's committed offsets reach the high
//! watermarks of the given topics (every input consumed *and* committed), printing the
//! remaining lag once a second. Exit 0 when caught up, 1 after `SECS` without.
//!
//! cargo run --release --example bench_offsets -- BROKERS GROUP t1,t2,t3 SECS

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [brokers, group, topics, secs] = &a[..] else {
        anyhow::bail!("usage: BROKERS GROUP TOPICS SECS");
    };
    let secs: u64 = secs.parse().context("SECS")?;
    // Same group id, never subscribed: only asks the coordinator for the group's offsets.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    let mut parts = Vec::new();
    for t in topics.split(',') {
        let md = c.fetch_metadata(Some(t), timeout)?;
        for p in md.topics()[0].partitions() {
            tpl.add_partition(t, p.id());
            parts.push((t.to_string(), p.id()));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last_print = Instant::now();
    loop {
        let high: i64 = parts
            .iter()
            .map(|(t, p)| c.fetch_watermarks(t, *p, timeout).map(|w| w.1))
            .sum::<Result<i64, _>>()?;
        let committed: i64 = c
            .committed_offsets(tpl.clone(), timeout)?
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        if committed >= high {
            println!("{committed}");
            return Ok(());
        }
        if Instant::now() > deadline {
            eprintln!("bench_offsets: committed {committed} of {high} after {secs}s");
            std::process::exit(1);
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!("bench_offsets: committed {committed} of {high}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
