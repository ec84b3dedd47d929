//! Writes seed inputs of real trees for `btree_reads`:
//! `cargo run --example seed_corpus -- corpus/btree_reads` (in `fuzz/`).

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus/btree_reads".into());
    std::fs::create_dir_all(&dir)?;
    for items in [1u32, 5, 20, 60, 150, 400] {
        let img = scoutfs_core::fuzzing::sample_tree_input(items);
        std::fs::write(format!("{dir}/tree-{items}"), img)?;
    }
    Ok(())
}
