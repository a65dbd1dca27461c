//! A small Server-Sent Events client: prints a user's top-k every time it changes, as an
//! application server following recflow's `GET /v1/subscribe` would. Only ureq and serde_json
//! are used; nothing here depends on recflow.
//!
//!     recflow run pipelines/demo.toml --serve --output /dev/null
//!     cargo run --example subscribe -- http://127.0.0.1:8080 42 5

use std::io::BufRead;

use anyhow::{bail, Context};
use serde_json::Value;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (base, user, k) = match args.as_slice() {
        [base, user] => (base, user, 10),
        [base, user, k] => (base, user, k.parse().context("K must be a whole number")?),
        _ => bail!("usage: subscribe BASE_URL USER [K]   (for example http://127.0.0.1:8080 42 5)"),
    };
    let url = format!("{}/v1/subscribe?users={user}", base.trim_end_matches('/'));
    let response = ureq::get(&url).call().with_context(|| format!("subscribing at {url}"))?;
    println!("following user {user} at {url}");
    let mut event = String::new();
    // Changes further down the list than `k` do not change what is shown.
    let mut shown = None;
    for line in std::io::BufReader::new(response.into_reader()).lines() {
        let line = line.context("reading the stream")?;
        if let Some(name) = line.strip_prefix("event: ") {
            event = name.to_string();
            continue;
        }
        let Some(data) = line.strip_prefix("data: ") else { continue };
        let data: Value = serde_json::from_str(data).context("an event's data is not JSON")?;
        match event.as_str() {
            "snapshot" | "change" => {
                let items: Vec<String> = data["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .take(k)
                            .map(|i| match i["fallback"].as_bool() {
                                Some(true) => format!("{} (popular)", i["item"]),
                                _ => format!("{} ({:.3})", i["item"], i["score"].as_f64().unwrap_or(0.0)),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let list = if items.is_empty() { "(none)".to_string() } else { items.join(", ") };
                if shown.as_ref() != Some(&list) {
                    println!("t={} {event:>8}: {list}", data["time"]);
                    shown = Some(list);
                }
            }
            // Progress says every change up to `as_of` has arrived; the list shown is current.
            "progress" => {}
            "lagged" => bail!("recflow disconnected this subscriber: {}", data["error"]),
            other => eprintln!("ignoring event {other}: {data}"),
        }
    }
    println!("the stream ended (the run stopped)");
    Ok(())
}
