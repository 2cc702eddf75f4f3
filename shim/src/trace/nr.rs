//! x86_64 system-call numbers the tracer knows (kept here rather than taken from libc, whose
//! newest ones vary with its version).

macro_rules! numbers {
    ($($name:ident = $n:expr, $s:expr;)*) => {
        $(pub const $name: u32 = $n;)*
        /// The call's name, for LPMX_SHIM_DEBUG.
        pub fn name(n: u64) -> &'static str {
            match n as u32 { $($n => $s,)* _ => "?" }
        }
    };
}

numbers! {
    OPEN = 2, "open";
    STAT = 4, "stat";
    FSTAT = 5, "fstat";
    LSTAT = 6, "lstat";
    ACCESS = 21, "access";
    CONNECT = 42, "connect";
    BIND = 49, "bind";
    CLONE = 56, "clone";
    EXECVE = 59, "execve";
    TRUNCATE = 76, "truncate";
    GETCWD = 79, "getcwd";
    CHDIR = 80, "chdir";
    FCHDIR = 81, "fchdir";
    RENAME = 82, "rename";
    MKDIR = 83, "mkdir";
    RMDIR = 84, "rmdir";
    CREAT = 85, "creat";
    LINK = 86, "link";
    UNLINK = 87, "unlink";
    SYMLINK = 88, "symlink";
    READLINK = 89, "readlink";
    CHMOD = 90, "chmod";
    CHOWN = 92, "chown";
    FCHOWN = 93, "fchown";
    LCHOWN = 94, "lchown";
    GETUID = 102, "getuid";
    GETGID = 104, "getgid";
    SETUID = 105, "setuid";
    SETGID = 106, "setgid";
    GETEUID = 107, "geteuid";
    GETEGID = 108, "getegid";
    SETREUID = 113, "setreuid";
    SETREGID = 114, "setregid";
    SETGROUPS = 116, "setgroups";
    SETRESUID = 117, "setresuid";
    GETRESUID = 118, "getresuid";
    SETRESGID = 119, "setresgid";
    GETRESGID = 120, "getresgid";
    SETFSUID = 122, "setfsuid";
    SETFSGID = 123, "setfsgid";
    UTIME = 132, "utime";
    MKNOD = 133, "mknod";
    STATFS = 137, "statfs";
    CHROOT = 161, "chroot";
    SETXATTR = 188, "setxattr";
    LSETXATTR = 189, "lsetxattr";
    GETXATTR = 191, "getxattr";
    LGETXATTR = 192, "lgetxattr";
    LISTXATTR = 194, "listxattr";
    LLISTXATTR = 195, "llistxattr";
    REMOVEXATTR = 197, "removexattr";
    LREMOVEXATTR = 198, "lremovexattr";
    UTIMES = 235, "utimes";
    INOTIFY_ADD_WATCH = 254, "inotify_add_watch";
    OPENAT = 257, "openat";
    MKDIRAT = 258, "mkdirat";
    MKNODAT = 259, "mknodat";
    FCHOWNAT = 260, "fchownat";
    FUTIMESAT = 261, "futimesat";
    NEWFSTATAT = 262, "newfstatat";
    UNLINKAT = 263, "unlinkat";
    RENAMEAT = 264, "renameat";
    LINKAT = 265, "linkat";
    SYMLINKAT = 266, "symlinkat";
    READLINKAT = 267, "readlinkat";
    FCHMODAT = 268, "fchmodat";
    FACCESSAT = 269, "faccessat";
    UTIMENSAT = 280, "utimensat";
    NAME_TO_HANDLE_AT = 303, "name_to_handle_at";
    RENAMEAT2 = 316, "renameat2";
    EXECVEAT = 322, "execveat";
    STATX = 332, "statx";
    CLONE3 = 435, "clone3";
    OPENAT2 = 437, "openat2";
    FACCESSAT2 = 439, "faccessat2";
    FCHMODAT2 = 452, "fchmodat2";
}
