// Links libkvc. KVC_LIB_DIR names the folder holding libkvc.so (a build tree's lib/ or an
// installed <prefix>/lib); it is also put in the test binaries' RUNPATH so that `cargo test`
// runs without LD_LIBRARY_PATH. Without it the system's library search path is used.
use std::env;

fn main() {
    println!("cargo:rerun-if-env-changed=KVC_LIB_DIR");
    if let Ok(dir) = env::var("KVC_LIB_DIR") {
        if !dir.is_empty() {
            println!("cargo:rustc-link-search=native={}", dir);
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir);
        }
    }
    println!("cargo:rustc-link-lib=dylib=kvc");
}
