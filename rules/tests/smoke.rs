#[test]
fn pack_fixtures() {
    let mut out = Vec::new();
    let code = cds_rules::cli::test(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../cds-rules")), &mut out);
    println!("{}", String::from_utf8_lossy(&out));
    assert_eq!(code, 0);
}
