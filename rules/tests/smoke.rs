#[test]
fn smoke_eval() {
    let mut out = Vec::new();
    let code = cds_rules::cli::eval(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../cds-rules/news2.rhai")),
        std::path::Path::new("/tmp/ctx1.json"),
        &mut out,
    );
    println!("{}", String::from_utf8_lossy(&out));
    assert_eq!(code, 0);
}
