//! Giving memory back once the models are loaded.
//!
//! Loading reads every embedded ONNX file once (each weight is copied out of it into tract's
//! constants, see [`super::onnx_read`]), which faults the file's pages of the binary into the
//! process: tens of megabytes that are never read again. Those constants are freed once the
//! ops have packed them, and glibc keeps part of such freed memory inside its arenas. Both are
//! returned to the kernel here; neither changes what the process computes.
//!
//! Before that, [`populate_for_write`] maps the fresh pages a weight is about to be copied into
//! in one system call rather than one page fault per page.

/// Drops the pages wholly inside `bytes` from this process's resident set.
///
/// `bytes` must be read-only data of the binary (here: `include_dir`'s embedded files): those
/// pages are private, clean and file-backed, so `MADV_DONTNEED` only unmaps them and a later
/// read faults them back in from the file with the same contents. Pages shared with
/// neighbouring data (the partial first and last page) are left alone.
pub fn release_file_pages(bytes: &'static [u8]) {
    #[cfg(target_os = "linux")]
    {
        let page = page_size();
        let start = (bytes.as_ptr() as usize).next_multiple_of(page);
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            // Safety: the range lies inside a live 'static, read-only mapping of the binary; the
            // advice changes residency, never contents, for clean file-backed private pages.
            let rc = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            };
            if rc != 0 {
                log::debug!(
                    "madvise(DONTNEED) on {} embedded bytes: {}",
                    end - start,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// Drops this program's machine-code pages from the resident set once loading is done.
///
/// Loading runs code that serving never runs again (the ONNX parser, tract's type analysis and
/// optimiser: most of the 15 MB of code a fresh server has touched). The code mapping is
/// private, file-backed and never written, so `MADV_DONTNEED` only unmaps its pages: they stay
/// in the page cache, and the code serving does run faults back in on its first use (a minor
/// fault per 64 KB or so, microseconds in all). Returns the bytes advised, 0 where the mapping
/// is not found (no `/proc`) or the advice fails.
pub fn release_code_pages() -> usize {
    #[cfg(target_os = "linux")]
    {
        let here = release_code_pages as fn() -> usize as usize;
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        // The executable mapping holding this very function: `start-end r-xp offset dev inode path`.
        let text = maps.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            let (start, end) = (
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            );
            (perms == "r-xp" && (start..end).contains(&here)).then_some((start, end))
        });
        let Some((start, end)) = text else {
            return 0;
        };
        // Safety: a private, file-backed, read-and-execute mapping of the binary: nothing ever
        // writes it, so dropping its pages changes residency only; every later instruction
        // fetch faults the same bytes back in from the file.
        let rc =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        if rc == 0 {
            return end - start;
        }
        log::debug!(
            "madvise(DONTNEED) on the code: {}",
            std::io::Error::last_os_error()
        );
    }
    0
}

/// Maps the pages wholly inside `bytes` in one system call (`MADV_POPULATE_WRITE`, Linux 5.14),
/// before they are written: cheaper than one page fault per 4 KiB page when a weight is copied
/// into fresh memory. Only residency changes, never contents; where the kernel does not know
/// the advice, the pages fault in one by one as before.
pub fn populate_for_write(bytes: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        /// `MADV_POPULATE_WRITE` from linux/mman.h (not in the libc crate).
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        advise_pages(bytes.as_ptr() as usize, bytes.len(), MADV_POPULATE_WRITE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// Returns the free memory inside the allocator's arenas to the kernel (glibc's
/// `malloc_trim`; a no-op elsewhere).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // Safety: malloc_trim only releases free pages; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `madvise` on the pages wholly inside `[start, start + len)`, for advice that changes
/// residency only (populating); a kernel that does not know it leaves the pages as they were.
#[cfg(target_os = "linux")]
fn advise_pages(start: usize, len: usize, advice: libc::c_int) {
    let page = page_size();
    let (first, end) = (start.next_multiple_of(page), (start + len) / page * page);
    if end > first {
        // Safety: the caller's range is memory of this process (a live slice); populating
        // advice maps its pages without changing what they hold.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, advice);
        }
    }
}

#[cfg(target_os = "linux")]
fn page_size() -> usize {
    // Safety: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read-only data of the test binary spanning several pages, like an embedded model.
    static PATTERN: [u8; 5 * 4096 + 123] = {
        let mut bytes = [0u8; 5 * 4096 + 123];
        let mut i = 0;
        while i < bytes.len() {
            bytes[i] = (i * 31 % 251) as u8;
            i += 1;
        }
        bytes
    };

    #[test]
    fn released_pages_read_back_the_same() {
        // black_box: read the mapped bytes, not a value the compiler folded from the constant.
        let data: &'static [u8] = std::hint::black_box(&PATTERN[..]);
        let before: u64 = data.iter().map(|&b| u64::from(b)).sum();
        release_file_pages(&data[7..]);
        trim_heap();
        let data: &'static [u8] = std::hint::black_box(data);
        let after: u64 = data.iter().map(|&b| u64::from(b)).sum();
        assert_eq!(before, after);
        assert!(data
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i * 31 % 251) as u8));
    }

    /// The code keeps running after its pages are dropped (they fault back in from the file),
    /// and what it computes does not change.
    #[test]
    fn code_runs_on_after_its_pages_are_released() {
        let before: u64 = (1..=1000u64).map(|i| std::hint::black_box(i * i)).sum();
        let released = release_code_pages();
        #[cfg(target_os = "linux")]
        assert!(released > 0, "the code mapping was found and advised");
        let _ = released;
        let after: u64 = (1..=1000u64).map(|i| std::hint::black_box(i * i)).sum();
        assert_eq!(before, after);
        assert_eq!(format!("{:?}", vec![1.5f32; 3]), "[1.5, 1.5, 1.5]");
    }

    #[test]
    fn populated_memory_keeps_its_contents_and_takes_writes() {
        let mut bytes: Vec<u8> = (0..9 * 4096 + 77).map(|i| (i % 253) as u8).collect();
        populate_for_write(&mut bytes[3..]);
        assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i % 253) as u8));
        // Fresh, never touched memory: populated, then written and read back.
        let mut fresh = vec![0u8; 64 * 4096];
        populate_for_write(&mut fresh);
        fresh
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = (i % 7) as u8);
        assert!(fresh.iter().enumerate().all(|(i, &b)| b == (i % 7) as u8));
    }
}
