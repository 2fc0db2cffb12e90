//! The in-memory copy of a file's header, metadata and tensor infos, read with `read` (never through the
//! mapping, so no metadata access can fault however the file changes after it was opened).
//!
//! Speed: a 262k-token vocabulary is ~7 MB of metadata. Faulting 7 MB of fresh memory in 4 KiB pages cost
//! more than parsing it (and malloc's memory for such sizes is fresh on every open), so a large head lives
//! in its own anonymous mapping with transparent huge pages requested (advice only: where the kernel does
//! not give them, the same bytes are read into 4 KiB pages). The parse resumes at the record it stopped in
//! when the bytes read so far run out, so reading in rounds re-parses at most one record per round.

use std::fs::File;

use memmap2::MmapMut;

use super::error::{GgufError, Result};
use super::reader::{parse_resuming, Parsed, Progress, EINVAL, EIO};

/// The first read of a file's head; more is read when the metadata runs past it.
const FIRST_READ: u64 = 1 << 20;
/// Read this much past what a parse said it needs (the tensor infos usually follow).
const READ_SLACK: u64 = 256 << 10;
/// From this size on, the head lives in its own mapping (below it, malloc's memory is as quick).
const OWN_MAPPING: usize = 4 << 20;

/// An owned, growable byte buffer: a `Vec` while small, an anonymous mapping when large.
pub(crate) struct Head {
    buf: Buf,
    len: usize,
}

enum Buf {
    Heap(Vec<u8>),
    Anon(MmapMut),
}

impl Head {
    pub(crate) fn from_vec(v: Vec<u8>) -> Head {
        Head { len: v.len(), buf: Buf::Heap(v) }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.buf {
            Buf::Heap(v) => &v[..self.len],
            Buf::Anon(m) => &m[..self.len],
        }
    }

    fn capacity(&self) -> usize {
        match &self.buf {
            Buf::Heap(v) => v.len(),
            Buf::Anon(m) => m.len(),
        }
    }

    fn spare(&mut self, upto: usize) -> &mut [u8] {
        match &mut self.buf {
            Buf::Heap(v) => &mut v[self.len..upto],
            Buf::Anon(m) => &mut m[self.len..upto],
        }
    }

    /// Room for `upto` bytes, the bytes so far kept.
    fn reserve(&mut self, upto: usize) -> std::io::Result<()> {
        if upto <= self.capacity() {
            return Ok(());
        }
        if upto < OWN_MAPPING {
            if let Buf::Heap(v) = &mut self.buf {
                v.resize(upto, 0);
                return Ok(());
            }
        }
        // Twice what is needed (address space only: pages are allocated when first written), so that a guess
        // of the metadata's size that was short rarely costs a second copy; a whole number of 2 MiB huge
        // pages, which Linux places on a huge-page boundary.
        let cap = upto.saturating_mul(2).next_multiple_of(2 << 20);
        let mut m = MmapMut::map_anon(cap)?;
        #[cfg(target_os = "linux")]
        let _ = m.advise(memmap2::Advice::HugePage); // advice only: no error is worth failing the open for
        m[..self.len].copy_from_slice(self.as_slice());
        self.buf = Buf::Anon(m);
        Ok(())
    }

    /// Read `file`'s bytes `[self.len, upto)` onto the end.
    fn read_more(&mut self, file: &File, upto: u64, path: &str) -> Result<()> {
        let upto =
            usize::try_from(upto).map_err(|_| GgufError::os(path, EINVAL, "file too large for this platform"))?;
        self.reserve(upto).map_err(|e| GgufError::io(path, &e))?;
        while self.len < upto {
            let at = self.len as u64;
            #[cfg(unix)]
            let r = std::os::unix::fs::FileExt::read_at(file, self.spare(upto), at);
            #[cfg(windows)]
            let r = std::os::windows::fs::FileExt::seek_read(file, self.spare(upto), at);
            match r {
                Ok(0) => {
                    return Err(GgufError::os(
                        path,
                        EIO,
                        format!(
                            "the file ended at byte {} while being read (it was {upto}+ bytes when opened)",
                            self.len
                        ),
                    ))
                }
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(GgufError::io(path, &e)),
            }
        }
        Ok(())
    }

    /// Keep the first `len` bytes; a small buffer with much to spare is shrunk.
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        if let Buf::Heap(v) = &mut self.buf {
            v.truncate(self.len);
            if v.capacity() - v.len() > v.len() / 8 {
                v.shrink_to_fit();
            }
        }
    }
}

/// Read as much of the file as its metadata needs (a megabyte, then as much as the parse says it needs) and
/// parse it.
pub(crate) fn read_head(file: &File, len: u64, path: &str) -> Result<(Head, Parsed)> {
    let file_len = usize::try_from(len).map_err(|_| GgufError::os(path, EINVAL, "file too large for this platform"))?;
    let mut head = Head::from_vec(Vec::new());
    let mut want = len.min(FIRST_READ);
    let mut progress = Progress::default();
    loop {
        head.read_more(file, want, path)?;
        match parse_resuming(head.as_slice(), file_len, &mut progress) {
            Err(e) if e.need_more.is_some() => {
                // The parse resumes at the record it stopped in, so reading little more each time costs no
                // re-parse; the growth is still at least 1.25x, which bounds the number of rounds.
                let need = e.need_more.unwrap_or(len).saturating_add(READ_SLACK);
                let next = need.max(want.saturating_add(want / 4)).min(len);
                if next <= want {
                    return Err(GgufError::os(path, EIO, "internal: the metadata reader made no progress"));
                }
                want = next;
            }
            Err(e) => return Err(e),
            Ok(p) => {
                head.truncate(p.infos_end as usize);
                return Ok((head, p));
            }
        }
    }
}
