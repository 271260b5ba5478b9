//! Part file writing: temp file in tmp_dir, write, rename to
//! `<final_dir>/part.<part_no:08>.<sha256hex>`, fsync; directory fsync once in `finish`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::chunk::{FeedBuffer, PartCutter};
use crate::errors::{CoreError, CoreResult};
use crate::hash::{md5_beside, to_hex, BlockCrcs};

/// Hash-and-write granularity: bytes are hashed and written in pieces of at most this size.
pub const IO_SIZE: usize = 1 << 20;

/// One sealed part file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub part_no: u64,
    pub size: u64,
    pub sha256: String,
    /// Absolute final path `<final_dir>/part.<part_no:08>.<sha256>`.
    pub path: PathBuf,
    /// Little-endian u32 CRC32C of every 64 KiB block, in order.
    pub block_crc32c: Vec<u8>,
}

/// What a finished writer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    pub size: u64,
    pub sha256: String,
    pub md5: String,
    pub parts: Vec<PartInfo>,
}

/// The file name of a part: `part.<part_no:08>.<sha256>`.
pub fn part_file_name(part_no: u64, sha256_hex: &str) -> String {
    format!("part.{part_no:08}.{sha256_hex}")
}

struct OpenPart {
    file: File,
    tmp_path: PathBuf,
    sha: Sha256,
    crcs: BlockCrcs,
    size: u64,
}

enum State {
    Open,
    Finished,
    Aborted,
    Failed(CoreError),
}

/// Cuts a byte stream into part files. Not thread-safe by itself; the binding guards it.
pub struct PartWriter {
    final_dir: PathBuf,
    tmp_dir: PathBuf,
    cutter: PartCutter,
    buffer: FeedBuffer,
    next_part_no: u64,
    current: Option<OpenPart>,
    /// Whole-object SHA-256. `None` while the first part is being written: until then the
    /// part's hasher has seen exactly the object's bytes, so it is cloned when that part is
    /// sealed instead of hashing every byte twice.
    obj_sha: Option<Sha256>,
    md5: Md5,
    fed: u64,
    parts: Vec<PartInfo>,
    dirs_ready: bool,
    /// Directories of the `final_dir` chain this writer created, outermost first.
    created_final_dirs: Vec<PathBuf>,
    state: State,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CoreError + 'a {
    move |e| CoreError::io(op, path, e)
}

/// Create `dir` and any missing ancestors; push the directories created, outermost first.
fn create_dir_chain(dir: &Path, created: &mut Vec<PathBuf>) -> CoreResult<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    loop {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(CoreError::io(
                    "create directory",
                    p,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "exists and is not a directory",
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p.to_path_buf());
                match p.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                    _ => break,
                }
            }
            Err(e) => return Err(CoreError::io("stat", p, e)),
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(&d) {
            Ok(()) => created.push(d),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(CoreError::io("create directory", &d, e)),
        }
    }
    Ok(())
}

/// Ask the kernel to start writing these bytes to disk now (asynchronously), so the fsync
/// that seals the part has little left to wait for. Purely a hint: errors are ignored (the
/// fsync reports real ones).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a file descriptor we own; no memory is passed.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: usize) {}

/// fsync a directory so the entries created or renamed in it survive power loss.
pub fn fsync_dir(dir: &Path) -> CoreResult<()> {
    let f = File::open(dir).map_err(io_err("open directory", dir))?;
    f.sync_all().map_err(io_err("fsync directory", dir))
}

fn remove_if_exists(path: &Path) -> CoreResult<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CoreError::io("remove", path, e)),
    }
}

impl PartWriter {
    /// `part_size` and `flush_bytes` must be > 0. Nothing touches the disk before the first
    /// byte is written. Parts are numbered from `first_part_no`.
    pub fn new(
        final_dir: &Path,
        tmp_dir: &Path,
        part_size: u64,
        flush_bytes: usize,
        first_part_no: u64,
    ) -> CoreResult<Self> {
        if part_size == 0 {
            return Err(CoreError::invalid("part_size must be > 0"));
        }
        if flush_bytes == 0 {
            return Err(CoreError::invalid("flush_bytes must be > 0"));
        }
        let absolute =
            |p: &Path| std::path::absolute(p).map_err(|e| CoreError::io("resolve path", p, e));
        Ok(Self {
            final_dir: absolute(final_dir)?,
            tmp_dir: absolute(tmp_dir)?,
            cutter: PartCutter::new(part_size),
            buffer: FeedBuffer::new(flush_bytes),
            next_part_no: first_part_no,
            current: None,
            obj_sha: None,
            md5: Md5::new(),
            fed: 0,
            parts: Vec::new(),
            dirs_ready: false,
            created_final_dirs: Vec::new(),
            state: State::Open,
        })
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.fed
    }

    /// Parts sealed so far (renamed into place; the directory is fsynced by `finish`).
    pub fn sealed(&self) -> &[PartInfo] {
        &self.parts
    }

    /// Bytes fed but not written yet.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    fn check_open(&self) -> CoreResult<()> {
        match &self.state {
            State::Open => Ok(()),
            State::Finished => Err(CoreError::invalid("PartWriter is already finished")),
            State::Aborted => Err(CoreError::invalid("PartWriter was aborted")),
            State::Failed(e) => Err(e.replay()),
        }
    }

    /// Copy `data` into the buffer (no I/O). True once at least `flush_bytes` are buffered.
    pub fn feed(&mut self, data: &[u8]) -> CoreResult<bool> {
        self.check_open()?;
        self.fed += data.len() as u64;
        Ok(self.buffer.feed(data))
    }

    /// Hash and write the buffered bytes, sealing parts that filled up.
    pub fn flush(&mut self) -> CoreResult<()> {
        self.check_open()?;
        let r = self.write_buffered();
        self.fail_on_error(r)
    }

    fn fail_on_error<T>(&mut self, r: CoreResult<T>) -> CoreResult<T> {
        if let Err(e) = &r {
            self.state = State::Failed(e.replay());
        }
        r
    }

    fn write_buffered(&mut self) -> CoreResult<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Move the buffer (and the MD5 state) out so they can be borrowed while `self` is
        // mutated.
        let mut buffer = std::mem::replace(&mut self.buffer, FeedBuffer::new(1));
        let mut md5 = std::mem::take(&mut self.md5);
        let bytes = buffer.as_slice();
        // MD5 is the slowest hash: it runs beside the SHA-256s, CRCs and writes.
        let r = md5_beside(&mut md5, bytes, || self.write_bytes(bytes));
        self.md5 = md5;
        buffer.clear();
        self.buffer = buffer;
        r
    }

    fn write_bytes(&mut self, mut rest: &[u8]) -> CoreResult<()> {
        while !rest.is_empty() {
            let (n, full) = self.cutter.take(rest.len());
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            self.write_piece(piece)?;
            if full {
                self.seal_current()?;
            }
        }
        Ok(())
    }

    /// Hash and append bytes that all belong to the current part.
    fn write_piece(&mut self, piece: &[u8]) -> CoreResult<()> {
        if self.current.is_none() {
            self.open_part()?;
        }
        let part = self.current.as_mut().expect("part opened above");
        for window in piece.chunks(IO_SIZE) {
            part.sha.update(window);
            if let Some(obj) = self.obj_sha.as_mut() {
                obj.update(window);
            }
            part.crcs.update(window);
            part.file
                .write_all(window)
                .map_err(io_err("write", &part.tmp_path))?;
            start_writeback(&part.file, part.size, window.len());
            part.size += window.len() as u64;
        }
        Ok(())
    }

    fn ensure_dirs(&mut self) -> CoreResult<()> {
        if !self.dirs_ready {
            create_dir_chain(&self.final_dir, &mut self.created_final_dirs)?;
            create_dir_chain(&self.tmp_dir, &mut Vec::new())?;
            self.dirs_ready = true;
        }
        Ok(())
    }

    fn open_part(&mut self) -> CoreResult<()> {
        self.ensure_dirs()?;
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        loop {
            let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp_path = self.tmp_dir.join(format!(".part-{pid}-{nanos:09}-{n}.tmp"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)
            {
                Ok(file) => {
                    self.current = Some(OpenPart {
                        file,
                        tmp_path,
                        sha: Sha256::new(),
                        crcs: BlockCrcs::new(),
                        size: 0,
                    });
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(CoreError::io("create", &tmp_path, e)),
            }
        }
    }

    /// Rename the current temp file to its final, content-addressed name, then fsync it.
    ///
    /// Renamed first: the fsync then commits the file's data and the rename in one
    /// filesystem journal commit (ext4 commits every pending metadata change), so the
    /// directory fsyncs in `finish` find nothing left to commit. A part under its final
    /// name but not yet synced is harmless: no head references it before `finish`
    /// returned (GC removes files without rows), and reads verify its SHA-256.
    fn seal_current(&mut self) -> CoreResult<()> {
        let part = self.current.as_mut().expect("seal without an open part");
        let sha = std::mem::take(&mut part.sha);
        if self.obj_sha.is_none() {
            self.obj_sha = Some(sha.clone());
        }
        let sha_hex = to_hex(&sha.finalize());
        let final_path = self
            .final_dir
            .join(part_file_name(self.next_part_no, &sha_hex));
        fs::rename(&part.tmp_path, &final_path)
            .map_err(|e| CoreError::io("rename", &part.tmp_path, e))?;
        if let Err(e) = part.file.sync_data() {
            let _ = fs::remove_file(&final_path);
            return Err(CoreError::io("fsync", &final_path, e));
        }
        let part = self.current.take().expect("checked above");
        self.parts.push(PartInfo {
            part_no: self.next_part_no,
            size: part.size,
            sha256: sha_hex,
            path: final_path,
            block_crc32c: part.crcs.finish(),
        });
        self.next_part_no += 1;
        Ok(())
    }

    /// Flush, seal the last (short) part, fsync the directory. Empty stream: no parts.
    pub fn finish(&mut self) -> CoreResult<WrittenObject> {
        self.check_open()?;
        let r = self.finish_inner();
        let r = self.fail_on_error(r);
        if r.is_ok() {
            self.state = State::Finished;
            self.buffer.release();
        }
        r
    }

    fn finish_inner(&mut self) -> CoreResult<WrittenObject> {
        self.write_buffered()?;
        if self.current.is_some() {
            self.seal_current()?;
        }
        if !self.parts.is_empty() {
            fsync_dir(&self.final_dir)?;
            // New directories only survive a crash once their parents' entries are synced.
            for d in self.created_final_dirs.iter().rev() {
                if let Some(parent) = d.parent() {
                    fsync_dir(parent)?;
                }
            }
        }
        let sha = self.obj_sha.take().unwrap_or_default();
        let md5 = std::mem::take(&mut self.md5);
        Ok(WrittenObject {
            size: self.fed,
            sha256: to_hex(&sha.finalize()),
            md5: to_hex(&md5.finalize()),
            parts: self.parts.clone(),
        })
    }

    /// Remove the temp file and every part this writer renamed into place (also after
    /// `finish`), then the directories it created if they are empty. Best effort: every
    /// removal is tried; the first failure is returned.
    pub fn abort(&mut self) -> CoreResult<()> {
        let mut first_err = None;
        if let Some(part) = self.current.take() {
            drop(part.file);
            if let Err(e) = remove_if_exists(&part.tmp_path) {
                first_err.get_or_insert(e);
            }
        }
        for p in self.parts.drain(..) {
            if let Err(e) = remove_if_exists(&p.path) {
                first_err.get_or_insert(e);
            }
        }
        for d in self.created_final_dirs.drain(..).rev() {
            // Fails harmlessly when something else was put there meanwhile.
            let _ = fs::remove_dir(&d);
        }
        self.buffer.release();
        self.state = State::Aborted;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }
}

impl Drop for PartWriter {
    /// A writer dropped before `finish` leaves nothing behind (nothing can reference its parts).
    fn drop(&mut self) {
        if matches!(self.state, State::Open | State::Failed(_)) {
            let _ = self.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{block_crcs, sha256_hex};

    fn data(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = match fs::read_dir(dir) {
            Ok(rd) => rd
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    fn write_all(
        root: &Path,
        bytes: &[u8],
        part_size: u64,
        chunk: usize,
        flush_bytes: usize,
    ) -> WrittenObject {
        let mut w = PartWriter::new(
            &root.join("final/g.1"),
            &root.join("tmp"),
            part_size,
            flush_bytes,
            0,
        )
        .unwrap();
        for c in bytes.chunks(chunk.max(1)) {
            if w.feed(c).unwrap() {
                w.flush().unwrap();
            }
        }
        assert_eq!(w.size(), bytes.len() as u64);
        w.finish().unwrap()
    }

    fn check_object(root: &Path, bytes: &[u8], part_size: u64, obj: &WrittenObject) {
        use md5::Digest as _;
        assert_eq!(obj.size, bytes.len() as u64);
        assert_eq!(obj.sha256, sha256_hex(bytes));
        assert_eq!(obj.md5, to_hex(&Md5::digest(bytes)));
        let want_parts = bytes.len().div_ceil(part_size as usize);
        assert_eq!(obj.parts.len(), want_parts);
        for (i, (p, expect)) in obj
            .parts
            .iter()
            .zip(bytes.chunks(part_size as usize))
            .enumerate()
        {
            assert_eq!(p.part_no, i as u64);
            assert_eq!(p.size, expect.len() as u64);
            assert_eq!(p.sha256, sha256_hex(expect));
            assert_eq!(p.block_crc32c, block_crcs(expect));
            assert!(p.path.is_absolute());
            assert_eq!(
                p.path.file_name().unwrap().to_str().unwrap(),
                part_file_name(i as u64, &p.sha256)
            );
            assert_eq!(fs::read(&p.path).unwrap(), expect);
        }
        assert!(files_in(&root.join("tmp")).is_empty(), "temp files left");
        assert_eq!(files_in(&root.join("final/g.1")).len(), want_parts);
    }

    #[test]
    fn streams_of_every_shape() {
        let ps = 1000u64;
        for total in [1usize, 999, 1000, 1001, 2000, 2999, 3000] {
            let bytes = data(total);
            for chunk in [1usize, 7, 999, 1000, 1001, 3000] {
                for flush in [1usize, 100, 1000, 4096] {
                    let dir = tempfile::tempdir().unwrap();
                    let obj = write_all(dir.path(), &bytes, ps, chunk, flush);
                    check_object(dir.path(), &bytes, ps, &obj);
                }
            }
        }
    }

    #[test]
    fn multi_block_parts_and_big_feeds() {
        let ps = 3 * 65536 + 10;
        let bytes = data(3 * ps as usize + 5);
        let dir = tempfile::tempdir().unwrap();
        // One feed larger than IO_SIZE and than a part.
        let obj = write_all(dir.path(), &bytes, ps, bytes.len(), 1 << 20);
        check_object(dir.path(), &bytes, ps, &obj);
        assert_eq!(obj.parts[0].block_crc32c.len(), 16);
        let dir = tempfile::tempdir().unwrap();
        let obj = write_all(dir.path(), &bytes, 4 << 20, 65536, 1 << 20);
        check_object(dir.path(), &bytes, 4 << 20, &obj);
    }

    #[test]
    fn empty_stream_gives_no_parts_and_touches_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let obj = write_all(dir.path(), b"", 1000, 1, 1);
        assert_eq!(obj.size, 0);
        assert!(obj.parts.is_empty());
        assert_eq!(obj.sha256, sha256_hex(b""));
        assert_eq!(obj.md5, "d41d8cd98f00b204e9800998ecf8427e");
        assert!(!dir.path().join("final").exists());
    }

    #[test]
    fn flush_without_feed_and_use_after_finish() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            PartWriter::new(&dir.path().join("f"), &dir.path().join("t"), 10, 4, 0).unwrap();
        w.flush().unwrap();
        assert!(!w.feed(b"abc").unwrap());
        assert!(w.feed(b"d").unwrap());
        assert_eq!(w.buffered(), 4);
        w.flush().unwrap();
        assert_eq!(w.buffered(), 0);
        // The temp file exists while the part is open.
        assert_eq!(files_in(&dir.path().join("t")).len(), 1);
        let obj = w.finish().unwrap();
        assert_eq!(obj.parts.len(), 1);
        assert!(w.is_finished());
        assert!(matches!(w.feed(b"x"), Err(CoreError::Invalid(_))));
        assert!(matches!(w.finish(), Err(CoreError::Invalid(_))));
        assert!(files_in(&dir.path().join("t")).is_empty());
    }

    #[test]
    fn first_part_no_names_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            PartWriter::new(&dir.path().join("f"), &dir.path().join("t"), 4, 100, 7).unwrap();
        w.feed(b"abcdefghij").unwrap();
        let obj = w.finish().unwrap();
        let nos: Vec<u64> = obj.parts.iter().map(|p| p.part_no).collect();
        assert_eq!(nos, vec![7, 8, 9]);
        assert!(obj.parts[2]
            .path
            .to_string_lossy()
            .contains("/part.00000009."));
    }

    #[test]
    fn abort_removes_temp_and_parts_and_created_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let final_dir = dir.path().join("blobs/a/g.1");
        let mut w = PartWriter::new(&final_dir, &dir.path().join("t"), 10, 1, 0).unwrap();
        w.feed(&data(25)).unwrap();
        w.flush().unwrap();
        assert_eq!(files_in(&final_dir).len(), 2);
        assert_eq!(files_in(&dir.path().join("t")).len(), 1);
        w.abort().unwrap();
        assert!(files_in(&dir.path().join("t")).is_empty());
        assert!(!dir.path().join("blobs").exists());
        assert!(matches!(w.feed(b"x"), Err(CoreError::Invalid(_))));
        // A second abort is harmless.
        w.abort().unwrap();
    }

    #[test]
    fn abort_after_finish_removes_parts_but_keeps_existing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let final_dir = dir.path().join("g.1");
        fs::create_dir(&final_dir).unwrap();
        fs::write(final_dir.join("other"), b"x").unwrap();
        let mut w = PartWriter::new(&final_dir, &dir.path().join("t"), 10, 1, 0).unwrap();
        w.feed(&data(30)).unwrap();
        let obj = w.finish().unwrap();
        assert_eq!(obj.parts.len(), 3);
        w.abort().unwrap();
        assert_eq!(files_in(&final_dir), vec!["other".to_string()]);
    }

    #[test]
    fn drop_before_finish_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let final_dir = dir.path().join("g.1");
        {
            let mut w = PartWriter::new(&final_dir, &dir.path().join("t"), 10, 1, 0).unwrap();
            w.feed(&data(15)).unwrap();
            w.flush().unwrap();
        }
        assert!(!final_dir.exists());
        assert!(files_in(&dir.path().join("t")).is_empty());
        // After finish, dropping keeps the parts.
        let mut w = PartWriter::new(&final_dir, &dir.path().join("t"), 10, 1, 0).unwrap();
        w.feed(&data(15)).unwrap();
        w.finish().unwrap();
        drop(w);
        assert_eq!(files_in(&final_dir).len(), 2);
    }

    #[test]
    fn invalid_arguments_and_unwritable_dirs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            PartWriter::new(dir.path(), dir.path(), 0, 1, 0),
            Err(CoreError::Invalid(_))
        ));
        assert!(matches!(
            PartWriter::new(dir.path(), dir.path(), 1, 0, 0),
            Err(CoreError::Invalid(_))
        ));
        // final_dir below a regular file: the I/O error names the path, and the writer stays
        // failed afterwards.
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let mut w = PartWriter::new(&file.join("sub"), &dir.path().join("t"), 4, 1, 0).unwrap();
        w.feed(b"abc").unwrap();
        let err = w.flush().unwrap_err();
        assert!(matches!(err, CoreError::Io { .. }), "{err}");
        assert!(err.to_string().contains("file"), "{err}");
        assert!(matches!(w.flush(), Err(CoreError::Io { .. })));
        w.abort().unwrap();
    }

    #[test]
    fn same_content_twice_in_one_dir_overwrites_atomically() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let obj = write_all(dir.path(), b"hello world", 100, 3, 4);
            assert_eq!(obj.parts.len(), 1);
        }
        assert_eq!(files_in(&dir.path().join("final/g.1")).len(), 1);
    }
}
