//! Embeds `migrations/{postgres,sqlite}/*.sql` into the binary.
//!
//! sqlx's `migrate!` macro would do this too, but it needs sqlx's `macros` feature, which builds
//! both database drivers a second time for the proc-macro host. Listing the files here costs
//! nothing and keeps `rdev-api migrate` working from a lone binary.

use std::{env, fmt::Write as _, fs, path::Path};

fn main() {
    let manifest = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    let mut code = String::new();
    for db in ["postgres", "sqlite"] {
        let dir = Path::new(&manifest).join("migrations").join(db);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("readable migration entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
            .collect();
        files.sort();
        writeln!(code, "pub const {}: &[(i64, &str, &str)] = &[", db.to_uppercase()).unwrap();
        for path in files {
            let stem = path.file_stem().and_then(|s| s.to_str()).expect("utf-8 file name");
            let (version, description) = stem
                .split_once('_')
                .unwrap_or_else(|| panic!("migration {stem} must be named <version>_<description>.sql"));
            let version: i64 = version.parse().unwrap_or_else(|_| panic!("bad version in {stem}"));
            writeln!(code, "    ({version}, {description:?}, include_str!({:?})),", path.display()).unwrap();
        }
        writeln!(code, "];").unwrap();
    }
    fs::write(out, code).expect("write migrations.rs");
}
