// Links libkvc, found in this order (no crate from a registry is needed):
//  1. KVC_LIB_DIR: the folder holding libkvc.so (a build tree's lib/ or an installed <libdir>);
//  2. pkg-config: `pkg-config --libs kvc` (kvc.pc, installed with kvc; PKG_CONFIG_PATH for
//     another prefix);
//  3. the linker's default search path (/usr/lib, /usr/local/lib).
// When the library is not in a folder the dynamic loader searches by itself (1 or 2 with a
// non-system prefix), its folder is put in the RUNPATH of this crate's own binaries (tests,
// examples). Crates that depend on this one get the folder as DEP_KVC_LIB_DIR in their build
// script (`links = "kvc"`) to do the same for theirs:
//     println!("cargo:rustc-link-arg=-Wl,-rpath,{}", std::env::var("DEP_KVC_LIB_DIR")?);
// With kvc installed under /usr or /usr/local nothing of this is needed.
use std::env;
use std::path::Path;
use std::process::Command;

// Folders the dynamic loader searches without a RUNPATH (Debian: ld.so.conf.d/*).
const SYSTEM_DIRS: &[&str] = &[
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

fn pkg_config_libdir() -> Option<String> {
    let program = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let out = Command::new(program)
        .args(["--variable=libdir", "kvc"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = String::from_utf8(out.stdout).ok()?.trim().to_string();
    if dir.is_empty() {
        None
    } else {
        Some(dir)
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=KVC_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    let dir = env::var("KVC_LIB_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .or_else(pkg_config_libdir);
    if let Some(dir) = dir {
        println!("cargo:rustc-link-search=native={}", dir);
        println!("cargo:lib_dir={}", dir);
        let canonical = Path::new(&dir).canonicalize().ok();
        let is_system = SYSTEM_DIRS
            .iter()
            .any(|s| canonical.as_deref() == Some(Path::new(s)) || dir == *s);
        if !is_system {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir);
        }
    }
    println!("cargo:rustc-link-lib=dylib=kvc");
}
