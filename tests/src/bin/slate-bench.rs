//! `make bench`: see `slate_tests::bench`.

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(slate_tests::bench::run())
}
