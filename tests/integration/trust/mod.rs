//! Trust boundaries, attacked for real: two ordinary users (the test user as the victim, the
//! harness's second user as the attacker) in one group, and root running the hooks a
//! scheduler runs (tests/setup/as-root.sh). Each test performs an attack that worked on an
//! earlier lpmx-job and asserts that it now fails.

mod cache;
mod hooks;
mod verify;
mod wrappers;

use crate::support::*;

/// The harness itself: the attacker is another user, both share the group, and root runs
/// only what as-root.sh allows.
#[test]
fn the_harness_has_two_users_a_group_and_a_root_side() {
    let _env = Env::new();
    let Some(mut who) = as_attacker("id") else {
        return;
    };
    let out = run(who.arg("-u"));
    assert!(out.status.success());
    let attacker_uid: u32 = stdout(&out).trim().parse().unwrap();
    assert_ne!(attacker_uid, unsafe { libc::getuid() });
    assert_ne!(attacker_uid, 0);
    let group = group().unwrap();
    let groups = stdout(&run(std::process::Command::new("id").arg("-Gn")));
    assert!(
        groups.split_whitespace().any(|g| g == group),
        "the test user is in {group}: {groups}"
    );
    let out = run(as_attacker("id").unwrap().arg("-Gn"));
    assert!(stdout(&out).split_whitespace().any(|g| g == group));
    // Root runs lpmx-job, and refuses anything else.
    let out = run(as_root(&[], &bin()).unwrap().arg("--version"));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(as_root(&[], std::path::Path::new("/bin/sh"))
        .unwrap()
        .args(["-c", "id"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("neither an lpmx-job executable"));
    assert_eq!(root_targets_intact(), Some(Ok(())));
}
