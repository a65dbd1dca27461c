//! Every pipeline shipped in `pipelines/` is valid as-is.

#[test]
fn every_shipped_pipeline_validates() {
    let mut checked = 0;
    for entry in std::fs::read_dir("pipelines").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            recflow::pipeline_file::load(&path).unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(checked >= 5, "demo, hot-items, ecommerce, movielens and bench are shipped");
}
