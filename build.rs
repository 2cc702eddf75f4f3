//! Link-time settings of the `lpmx-job` executable.
//!
//! Inside a container, the host command bridge runs this same executable (see
//! `src/container/bridge/mod.rs`) with the host's dynamic loader and C libraries bound at
//! `/.lpmx/lib/lpmx-job.libs/`, since the image may have none, or other versions. DT_RPATH
//! (not RUNPATH: it is searched before the container's LD_LIBRARY_PATH) names that directory
//! relative to the executable; on the host it does not exist and the usual search applies.
//!
//! Start-up cost: every task of a job step starts this executable, so it is linked as a
//! fixed-address executable (`-no-pie`: none of the ~16,000 relative relocations a PIE needs
//! at start) with lazy binding (`-z lazy`: only the C functions a run calls are looked up).
//! Together they take about 0.3 ms off `lpmx-job run IMG true`, which puts it level with
//! `ch-run` (contrib/bench/run.sh). What this gives up is hardening a memory-safe program
//! leans on less: a randomized executable base and a read-only GOT.
//!
//! The unwinder is linked in statically (libgcc_eh, as `-static-libgcc` does for C): Rust's
//! std asks for `-lgcc_s`, and loading libgcc_s costs a library load plus its constructor's
//! CPU-feature probe (cpuid instructions, each a trap to the hypervisor on a virtual
//! machine; both showed in `perf record` of every task start), for an unwinder `run` never
//! uses. A
//! `libgcc_s.so` linker script in OUT_DIR, searched first, answers `-lgcc_s` with
//! `-lgcc_eh`.
//!
//! A static executable (`-C target-feature=+crt-static`, contrib/build-static.sh) gets no
//! DT_RPATH: it needs no loader or library (the bridge binds it alone and links its names
//! to it directly), and glibc's static-pie start-up asserts that there is neither DT_RPATH
//! nor DT_RUNPATH, so with one the executable crashes before `main`.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let crt_static = std::env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|f| f.split(',').any(|f| f == "crt-static"));
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
        && !crt_static
    {
        println!("cargo:rustc-link-arg-bins=-Wl,--disable-new-dtags,-rpath,$ORIGIN/lpmx-job.libs");
        println!("cargo:rustc-link-arg-bin=lpmx-job=-no-pie");
        println!("cargo:rustc-link-arg-bin=lpmx-job=-Wl,-z,lazy");
        static_unwinder();
    }
}

fn static_unwinder() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR set by cargo"));
    let script = out.join("libgcc_s.so");
    std::fs::write(&script, "INPUT(-lgcc_eh)\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
    println!("cargo:rustc-link-search=native={}", out.display());
}
