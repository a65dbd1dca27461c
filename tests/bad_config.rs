//! Bad configuration fails at start-up with a message naming the key and the fix.

mod common;

use common::OutputWithin;

use std::process::Command;

use recflow::Pipeline;

fn error_of(toml: &str) -> String {
    Pipeline::from_toml(toml, "p.toml").expect_err("the pipeline is rejected").to_string()
}

#[test]
fn unknown_and_invalid_keys_are_named() {
    let cases = [
        ("[hot_items]\nsize = \"1h\"\nslid = \"5m\"", "slid"),
        ("[hot_items]\nsize = \"7m\"\nslide = \"5m\"", "hot_items.size"),
        ("[hot_items]\nslide = \"5 parsecs\"", "parsecs"),
        ("[hot_items]\ntop_n = 0", "hot_items.top_n"),
        ("[recommend]\nk = 0", "recommend.k"),
        ("[recommend]\nalpha = 0.0\nbeta = 0.0", "recommend.alpha"),
        ("[recommend]\nlong_term = \"forever\"", "all"),
        ("[recommend]\nshort_term = { kind = \"hopping\", size = \"1h\" }", "hopping"),
        ("[recommend.similarity]\nmeasure = \"euclid\"", "euclid"),
        ("[recommend]\nseeds = \"latest\"", "latest"),
        ("[recommend]\nrecency_decay = 0.0", "recommend.recency_decay"),
        ("[recommend]\nrecency_decay = 1.5", "recommend.recency_decay"),
        ("[recommend]\nco_occurrence = \"horizon\"\npair_decay = -0.5", "recommend.pair_decay"),
        ("[recommend]\npair_decay = 0.9", "co_occurrence = \"horizon\""),
        ("[recommend]\nco_occurrence = \"horizon\"\nhistory = 0", "recommend.history"),
        ("[recommend]\nhistory = 1", "recommend.history"),
        ("[recommend]\n[recommend.similarity]\nrefresh = \"0s\"", "recommend.similarity.refresh"),
        ("[recommend]\n[recommend.similarity]\nasymmetry = 0.0", "recommend.similarity.asymmetry"),
        ("[recommend]\n[recommend.similarity]\nasymmetry = 1.5", "recommend.similarity.asymmetry"),
        ("[recommend]\n[recommend.similarity]\nmeasure = \"jaccard\"\nasymmetry = 0.3", "measure = \"cosine\""),
        ("[recommend]\npopularity_prior = -0.1", "recommend.popularity_prior"),
        ("[recommend]\ndiversity = 1.0", "recommend.diversity"),
        ("[recommend]\nlong_tail = 2.0", "recommend.long_tail"),
        ("[recommend]\n[recommend.similarity]\nshrinkage = -1", "recommend.similarity.shrinkage"),
        ("[recommend]\n[recommend.similarity]\nmin_llr = -3", "recommend.similarity.min_llr"),
        (
            "[recommend]\n[recommend.similarity]\nfalse_discovery_rate = 1.0",
            "recommend.similarity.false_discovery_rate",
        ),
        ("[recommend]\npopular_refresh = \"2h\"", "no longer than similarity.refresh"),
        ("[time]\nmax_future = \"0s\"\n[hot_items]", "time.max_future"),
        ("[recommend]\npopularity_prior = nan", "recommend.popularity_prior"),
        ("[weights]\nrating_offset = -1.0\n[hot_items]", "weights.rating_offset"),
        ("[source]\nkind = \"file\"\n[hot_items]", "source.path"),
        ("[source]\ncolumns = [\"user\", \"item\", \"ts\"]\n[hot_items]", "source.default_action"),
        ("[source]\ncolumns = [\"user\", \"thing\", \"ts\"]\n[hot_items]", "source.columns"),
        ("[weights]\nview = -1.0\n[hot_items]", "weights.view"),
        ("[weights]\nbuy = 1001\n[hot_items]", "between 0 and 1000"),
        ("[weights]\nrating_offset = 2000000\n[hot_items]", "weights.rating_offset"),
        ("[recommend]\ntop_preferences = 10001", "recommend.top_preferences"),
        ("[time]\ntick = \"0s\"\n[hot_items]", "time.tick"),
        ("name = \"nothing\"", "recommend"),
        ("[hot_items]\n[serve]\naddr = \"localhost\"", "serve.addr"),
        ("[hot_items]\n[serve]\ntoken = \"a\"\ntoken_env = \"T\"", "serve.token"),
        ("[hot_items]\n[serve]\ntoken = \" \"", "serve.token"),
        ("[hot_items]\n[serve]\nread_token = \"a\"\nread_token_env = \"T\"", "serve.read_token"),
        ("[hot_items]\n[serve]\nread_token_env = \"\"", "serve.read_token_env"),
        ("[hot_items]\n[serve]\nmax_body_bytes = 0", "serve.max_body_bytes"),
        ("[hot_items]\n[serve]\nmax_connections = 100\nmax_subscribers = 100", "serve.max_connections"),
        ("[hot_items]\n[serve]\nheader_timeout = \"0s\"", "serve.header_timeout"),
        ("[hot_items]\n[serve]\nclient_buffer = 0", "serve.client_buffer"),
        ("[hot_items]\n[serve]\nclient_buffer = 9999999999", "serve.client_buffer"),
        ("[hot_items]\n[serve]\nprogress_interval = \"0s\"", "serve.progress_interval"),
        ("[hot_items]\n[serve]\nlinger = \"always\"", "forever"),
        ("[hot_items]\n[serve]\nport = 80", "port"),
        ("[hot_items]\n[output]\nmax_rejected_share = 0.0", "output.max_rejected_share"),
        ("[hot_items]\n[output]\nmax_rejected_share = 1.5", "in (0, 1]"),
        ("[hot_items]\n[output]\nmax_rejected_share = nan", "output.max_rejected_share"),
        ("[hot_items]\n[checkpoint]\ndir = \"ckpt\"\nkeep = 0", "checkpoint.keep"),
        ("[hot_items]\n[checkpoint]\ndir = \"\"", "checkpoint.dir"),
        ("[hot_items]\n[checkpoint]\ninterval = \"10s\"", "dir"),
        ("[hot_items]\n[checkpoint]\ndir = \"ckpt\"\nevery = \"10s\"", "every"),
    ];
    for (toml, key) in cases {
        let message = error_of(toml);
        assert!(message.contains(key), "error for {toml:?} should name `{key}`: {message}");
        assert!(message.starts_with("pipeline p.toml"), "error names the file: {message}");
    }
}

#[test]
fn the_cli_refuses_a_bad_pipeline_and_a_missing_input() {
    let dir = std::env::temp_dir().join(format!("recflow-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[hot_items]\nsize = \"7m\"\nslide = \"5m\"\n").unwrap();
    // One line naming the key, even where RUST_BACKTRACE is set (it is for panics, not mistakes).
    let out =
        Command::new(env!("CARGO_BIN_EXE_recflow")).args(["run"]).arg(&bad).env("RUST_BACKTRACE", "1").output_within();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hot_items.size") && stderr.contains("multiple of slide"), "{stderr}");
    assert!(stderr.starts_with("Error: ") && stderr.lines().count() == 1, "one line, no backtrace: {stderr}");

    let good = dir.join("good.toml");
    std::fs::write(&good, "[source]\nkind = \"file\"\npath = \"/nonexistent/events.csv\"\n[hot_items]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_recflow")).args(["run"]).arg(&good).output_within();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/events.csv"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An address reachable beyond this machine needs a token, or an explicit opt-out.
#[test]
fn serving_beyond_this_machine_needs_a_token() {
    let base = "[hot_items]\n[serve]\naddr = \"0.0.0.0:0\"\n";
    let error = recflow::Pipeline::from_toml(base, "p.toml").unwrap_err().to_string();
    assert!(error.contains("serve.token") && error.contains("allow_unauthenticated"), "{error}");
    for fix in ["token = \"s3cret\"", "token_env = \"RECFLOW_TOKEN\"", "allow_unauthenticated = true"] {
        let toml = format!("{base}{fix}\n");
        assert!(recflow::Pipeline::from_toml(&toml, "p.toml").is_ok(), "{fix}");
    }
    for local in ["127.0.0.1:0", "[::1]:0"] {
        assert!(recflow::Pipeline::from_toml(&base.replace("0.0.0.0:0", local), "p.toml").is_ok(), "{local}");
    }
}
