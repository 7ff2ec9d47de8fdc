//! Archive extraction (the `archive` content type) into a temporary root:
//! whatever the bytes, nothing appears beside the root and no symbolic
//! link inside it leads out of it (docs/archives.md).
#![no_main]
use std::path::Path;

fn check_links(dir: &Path, root: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_symlink() {
            if let Ok(real) = std::fs::canonicalize(&p) {
                assert!(real.starts_with(root), "{} leads to {}", p.display(), real.display());
            }
        } else if t.is_dir() {
            check_links(&p, root);
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let base = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
    let root = base.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let _ = importer::cdi::archive::extract(data, &root, 1 << 20);
    let beside: Vec<_> = std::fs::read_dir(base.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("root")], "something escaped the root");
    let root = std::fs::canonicalize(&root).unwrap();
    check_links(&root, &root);
});
