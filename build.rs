//! Link-time settings of the `lpmx-job` executable.
//!
//! Inside a container, the host command bridge runs this same executable (see
//! `src/bridge/mod.rs`) with the host's dynamic loader and C libraries bound at
//! `/.lpmx/lib/lpmx-job.libs/`, since the image may have none, or other versions. DT_RPATH
//! (not RUNPATH: it is searched before the container's LD_LIBRARY_PATH) names that directory
//! relative to the executable; on the host it does not exist and the usual search applies.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,--disable-new-dtags,-rpath,$ORIGIN/lpmx-job.libs");
    }
}
