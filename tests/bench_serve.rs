//! `recflow bench --serve` drives a live pipeline's server: it answers point queries beside held
//! subscriptions, a posted event reaches a subscriber, and forgotten users' forgetting completes
//! (figures are printed, never asserted).

mod common;

use common::OutputWithin;

#[test]
fn the_serving_benchmark_queries_posts_and_subscribes() {
    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/demo.toml");
    let output = common::recflow()
        .args(["bench", pipeline, "--serve", "--seconds", "1", "--posts", "2", "--forgets", "2", "--clients", "1"])
        .args(["--subscribers", "20"])
        .output_within();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let queries: u64 = stdout.split_whitespace().next().and_then(|n| n.parse().ok()).expect("a query count");
    assert!(queries > 0, "{stdout}");
    assert!(stdout.contains("posted event to subscriber: p50") && stdout.contains("over 2 posts"), "{stdout}");
    assert!(stdout.contains("20 subscriptions held open during the queries; 20 still open at the end"), "{stdout}");
    assert!(stdout.contains("forget a user until complete: p50") && stdout.contains("over 2 users"), "{stdout}");
}
