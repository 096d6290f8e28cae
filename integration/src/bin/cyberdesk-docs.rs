//! `make docs`: rewrites README.md's generated reference tables (see `cyberdesk_integration::docs`).

fn main() -> anyhow::Result<()> {
    let path = cyberdesk_integration::workspace::repo_path("README.md");
    let before = std::fs::read_to_string(&path)?;
    let after = cyberdesk_integration::docs::sync_readme(&before)?;
    if after == before {
        eprintln!("README.md: generated tables already current");
    } else {
        std::fs::write(&path, after)?;
        eprintln!("README.md: generated tables rewritten");
    }
    Ok(())
}
