//! A BPF array map created `BPF_F_MMAPABLE`, mapped shared with the program and seen as
//! 64-bit words that both sides access only atomically (the seen-bitmap, the source table).

use std::{os::fd::AsFd as _, ptr::NonNull, sync::atomic::AtomicU64};

use aya::maps::MapData;

use super::DataplaneError;

/// The words of a mapped array map.
pub struct Words {
    base: NonNull<AtomicU64>,
    len: usize,
    /// Keeps the map (and so the mapping's object) alive as long as the mapping.
    _map: MapData,
}

#[allow(unsafe_code, reason = "a pointer to atomics in shared memory")]
// SAFETY: the mapping is plain shared memory accessed only through atomics; nothing in it
// is tied to the thread that created it.
unsafe impl Send for Words {}
#[allow(unsafe_code, reason = "a pointer to atomics in shared memory")]
// SAFETY: as above: every access is atomic.
unsafe impl Sync for Words {}

impl Words {
    /// Map the first `len` words of `map` (named `name` in errors): its whole value area
    /// when `len` is its entries times its value size in words.
    pub fn map(map: MapData, len: usize, name: &str) -> Result<Self, DataplaneError> {
        let fd = map.fd().as_fd();
        #[allow(unsafe_code, reason = "mmap of a BPF array map; SAFETY below")]
        // SAFETY: a fresh shared mapping of `len` words of the map's value area (laid out as
        // an array by the kernel for an mmapable array); the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(DataplaneError::Other(format!(
                "map {name}: mmap failed: {}",
                std::io::Error::last_os_error()
            )));
        }
        let base = NonNull::new(p.cast::<AtomicU64>())
            .ok_or_else(|| DataplaneError::Other(format!("map {name}: mmap gave null")))?;
        Ok(Self {
            base,
            len,
            _map: map,
        })
    }

    /// Word `i`.
    pub fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "word {i} of a mapping of {}", self.len);
        #[allow(unsafe_code, reason = "a word of the mapping; SAFETY below")]
        // SAFETY: i < len words mapped, 8-aligned (page-aligned base); the program and this
        // process only access them atomically, and the mapping lives as long as `self`.
        unsafe {
            self.base.add(i).as_ref()
        }
    }
}

impl Drop for Words {
    fn drop(&mut self) {
        #[allow(unsafe_code, reason = "munmap of our own mapping; SAFETY below")]
        // SAFETY: the mapping made in `map`, of `len` words; no reference into it outlives
        // `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len * 8);
        }
    }
}
