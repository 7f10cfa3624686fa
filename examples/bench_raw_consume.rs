//! The broker's raw consume rate, for `scripts/bench`: a plain rdkafka consumer (default
//! librdkafka settings) reads every partition of the given topics from the beginning up to
//! its high watermark, only counting messages and bytes. Prints `<messages> <bytes> <secs>`,
//! timed from the first message to the last. `BENCH_CONSUMER_PROPS="k=v,k=v"` adds
//! librdkafka properties (to try consumer tuning).
//!
//! cargo run --release --example bench_raw_consume -- 127.0.0.1:9092 t1,t2,t3

use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().context("usage: BROKERS TOPICS")?;
    let topics = args.next().context("usage: BROKERS TOPICS")?;
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &brokers)
        .set("group.id", format!("bench-raw-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    for kv in std::env::var("BENCH_CONSUMER_PROPS")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((k, v)) = kv.split_once('=') {
            cc.set(k.trim(), v.trim());
        }
    }
    let c: BaseConsumer = cc.create()?;
    let timeout = Duration::from_secs(10);
    let mut tpl = TopicPartitionList::new();
    let mut want = 0i64;
    for t in topics.split(',') {
        let md = c.fetch_metadata(Some(t), timeout)?;
        for p in md.topics()[0].partitions() {
            let (lo, hi) = c.fetch_watermarks(t, p.id(), timeout)?;
            want += hi - lo;
            tpl.add_partition_offset(t, p.id(), Offset::Beginning)?;
        }
    }
    c.assign(&tpl)?;
    let (mut n, mut bytes) = (0i64, 0u64);
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while n < want && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
            }
            Some(Err(e)) => eprintln!("bench_raw_consume: {e}"),
            None => {}
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    println!("{n} {bytes} {secs:.3}");
    anyhow::ensure!(n == want, "read {n} of {want} messages");
    Ok(())
}
