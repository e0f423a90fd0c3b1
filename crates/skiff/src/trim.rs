//! Giving back start-up code pages.
//!
//! The `skiff` binary holds the whole platform (API server, controllers, runtime, agent), and a
//! long-running process of it maps far more of its code while starting (argument parsing,
//! TLS and client set-up, first lists) than it runs afterwards. The kernel also maps code
//! around every page touched ("fault-around", 64 KiB by default), so a process's resident
//! set counts megabytes of the binary it never uses again. [`code_pages`] drops the resident
//! pages of the executable's code once a process is up: the pages stay in the page cache,
//! and whatever the process runs later is mapped again from there as it is touched.
//! Nothing is lost; only the resident set shrinks to the code in use.

/// Drops this process's resident pages of its executable's code (the `r-xp` mappings of
/// `/proc/self/exe`); returns how many bytes of mappings were advised.
#[allow(unsafe_code)]
pub fn code_pages() -> usize {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return 0;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let mut advised = 0;
    for line in maps.lines() {
        // start-end perms offset dev inode path
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "r-xp" || std::path::Path::new(f[5]) != exe {
            continue;
        }
        let Some((start, end)) = f[0].split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        let len = end.saturating_sub(start);
        // SAFETY: [start, end) is a whole mapping of this process's own executable that is
        // read-only and executable (no Rust object lives in it, and code pages are never
        // written, so there is no private copy to lose). MADV_DONTNEED only unmaps its
        // pages: the next access maps the same unchanged file page again.
        let r = unsafe { rustix::mm::madvise(start as *mut std::ffi::c_void, len, rustix::mm::Advice::LinuxDontNeed) };
        if r.is_ok() {
            advised += len;
        }
    }
    advised
}
