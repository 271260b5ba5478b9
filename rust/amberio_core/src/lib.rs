//! Python bindings (`amberio._core`) over the pure-Rust core modules; no logic lives here.
//!
//! Every class is usable from any thread (pyo3 does not mark them `unsendable`): state sits
//! behind a `Mutex` that is only ever taken with `try_lock` while attached to the interpreter,
//! so a second thread using the same object at the same time gets a `RuntimeError` instead of
//! a deadlock. Hashing and file I/O run detached from the interpreter (GIL released).

pub mod chunk;
pub mod crc64;
pub mod errors;
pub mod hash;
pub mod parts;
pub mod range;
pub mod slot;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::errors::CoreError;
use crate::hash::BLOCK_SIZE;

/// Inputs larger than this are hashed with the GIL released.
const DETACH_THRESHOLD: usize = 64 * 1024;

create_exception!(
    amberio._core,
    IntegrityError,
    PyException,
    "Bytes on disk disagree with their recorded SHA-256 / CRC32C or size.\n\n\
     `args` is `(message, path)`: the message names the file and what disagreed."
);

/// Map a core error onto the Python exception the stub documents.
fn to_pyerr(e: CoreError) -> PyErr {
    match e {
        CoreError::Io { op, path, source } => {
            // OSError(errno, strerror, filename) picks the right subclass (FileNotFoundError, ...).
            let text = source.to_string();
            let reason = match text.find(" (os error") {
                Some(i) => &text[..i],
                None => &text,
            };
            let strerror = format!("{op}: {reason}");
            match (source.raw_os_error(), path) {
                (Some(code), Some(p)) => {
                    PyOSError::new_err((code, strerror, p.to_string_lossy().into_owned()))
                }
                (Some(code), None) => PyOSError::new_err((code, strerror)),
                (None, Some(p)) => PyOSError::new_err(format!("{strerror}: {}", p.display())),
                (None, None) => PyOSError::new_err(strerror),
            }
        }
        CoreError::Integrity { message, path } => {
            IntegrityError::new_err((message, path.to_string_lossy().into_owned()))
        }
        CoreError::Invalid(m) => PyValueError::new_err(m),
    }
}

/// Take an object's lock without blocking while attached to the interpreter.
fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> PyResult<MutexGuard<'a, T>> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(TryLockError::WouldBlock) => Err(PyRuntimeError::new_err(format!(
            "{what} is being used by another thread"
        ))),
        Err(TryLockError::Poisoned(_)) => Err(PyRuntimeError::new_err(format!(
            "{what} is unusable after an internal panic"
        ))),
    }
}

/// A size or position from Python: negative values are a ValueError (not an OverflowError).
fn non_negative(name: &str, v: i64) -> PyResult<u64> {
    u64::try_from(v).map_err(|_| PyValueError::new_err(format!("{name} must be >= 0, got {v}")))
}

/// Contract §4: int.from_bytes(sha256(path_utf8)[0:8], "big") % total_slots.
#[pyfunction]
fn slot_for_path(path: &str, total_slots: i64) -> PyResult<u64> {
    let total_slots = non_negative("total_slots", total_slots)?;
    if total_slots == 0 {
        return Err(PyValueError::new_err("total_slots must be > 0"));
    }
    Ok(slot::slot_for_path(path, total_slots))
}

/// SHA-256 of `data` as lowercase hex (GIL released for large inputs).
#[pyfunction]
fn sha256_hex(py: Python<'_>, data: &[u8]) -> String {
    if data.len() > DETACH_THRESHOLD {
        py.detach(|| hash::sha256_hex(data))
    } else {
        hash::sha256_hex(data)
    }
}

/// Little-endian u32 CRC32C of every BLOCK_SIZE block of `data` (GIL released for large inputs).
#[pyfunction]
fn block_crc32c<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    let crcs = if data.len() > DETACH_THRESHOLD {
        py.detach(|| hash::block_crcs(data))
    } else {
        hash::block_crcs(data)
    };
    PyBytes::new(py, &crcs)
}

/// CRC-64/NVME of `data` continuing from `previous`, the finished CRC of the bytes before it
/// (chained like `zlib.crc32`; GIL released for large inputs).
#[pyfunction]
#[pyo3(signature = (data, previous = 0))]
fn crc64nvme(py: Python<'_>, data: &[u8], previous: u64) -> u64 {
    if data.len() > DETACH_THRESHOLD {
        py.detach(|| crc64::crc64nvme(data, previous))
    } else {
        crc64::crc64nvme(data, previous)
    }
}

/// Verify a whole part file (size and SHA-256) and return its block CRCs. GIL released.
#[pyfunction]
fn verify_part<'py>(
    py: Python<'py>,
    path: PathBuf,
    size: i64,
    sha256: &str,
) -> PyResult<Bound<'py, PyBytes>> {
    let size = non_negative("size", size)?;
    let spec = range::PartSpec::new(path, size, sha256, None).map_err(to_pyerr)?;
    let crcs = py.detach(|| range::verify_part(&spec)).map_err(to_pyerr)?;
    Ok(PyBytes::new(py, &crcs))
}

/// Streaming SHA-256 + MD5 over a body, without writing anything.
#[pyclass(module = "amberio._core", name = "ObjectHasher")]
struct PyObjectHasher {
    inner: Mutex<Option<hash::ObjectHasher>>,
    size: AtomicU64,
}

#[pymethods]
impl PyObjectHasher {
    #[new]
    fn new() -> Self {
        Self {
            inner: Mutex::new(Some(hash::ObjectHasher::new())),
            size: AtomicU64::new(0),
        }
    }

    fn update(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let mut g = lock(&self.inner, "ObjectHasher")?;
        let h = g
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("ObjectHasher is already finished"))?;
        if data.len() > DETACH_THRESHOLD {
            py.detach(|| h.update(data));
        } else {
            h.update(data);
        }
        self.size.store(h.size(), Ordering::Relaxed);
        Ok(())
    }

    #[getter]
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// Return (sha256_hex, md5_hex). The hasher cannot be used afterwards.
    fn finish(&self) -> PyResult<(String, String)> {
        let mut g = lock(&self.inner, "ObjectHasher")?;
        let h = g
            .take()
            .ok_or_else(|| PyValueError::new_err("ObjectHasher is already finished"))?;
        Ok(h.finish())
    }
}

/// One sealed part file.
#[pyclass(module = "amberio._core", name = "PartInfo", frozen)]
struct PyPartInfo {
    #[pyo3(get)]
    part_no: u64,
    #[pyo3(get)]
    size: u64,
    #[pyo3(get)]
    sha256: String,
    /// Final absolute path: <final_dir>/part.<part_no:08>.<sha256>.
    #[pyo3(get)]
    path: String,
    crcs: Vec<u8>,
}

#[pymethods]
impl PyPartInfo {
    /// Little-endian u32 CRC32C of every BLOCK_SIZE block of the part, in order.
    #[getter]
    fn block_crc32c<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.crcs)
    }

    fn __repr__(&self) -> String {
        format!(
            "PartInfo(part_no={}, size={}, sha256='{}', path='{}')",
            self.part_no, self.size, self.sha256, self.path
        )
    }
}

/// What a finished PartWriter produced.
#[pyclass(module = "amberio._core", name = "WrittenObject", frozen)]
struct PyWrittenObject {
    #[pyo3(get)]
    size: u64,
    #[pyo3(get)]
    sha256: String,
    #[pyo3(get)]
    md5: String,
    parts: Vec<Py<PyPartInfo>>,
}

#[pymethods]
impl PyWrittenObject {
    #[getter]
    fn parts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.parts.iter().map(|p| p.clone_ref(py)))
    }

    fn __repr__(&self) -> String {
        format!(
            "WrittenObject(size={}, sha256='{}', md5='{}', parts=<{} parts>)",
            self.size,
            self.sha256,
            self.md5,
            self.parts.len()
        )
    }
}

/// Cuts a byte stream into fixed-size part files.
#[pyclass(module = "amberio._core", name = "PartWriter")]
struct PyPartWriter {
    inner: Mutex<parts::PartWriter>,
    size: AtomicU64,
}

#[pymethods]
impl PyPartWriter {
    #[new]
    #[pyo3(signature = (final_dir, tmp_dir, part_size, flush_bytes = 262144, first_part_no = 0))]
    fn new(
        final_dir: PathBuf,
        tmp_dir: PathBuf,
        part_size: i64,
        flush_bytes: i64,
        first_part_no: i64,
    ) -> PyResult<Self> {
        let part_size = non_negative("part_size", part_size)?;
        let flush_bytes = usize::try_from(non_negative("flush_bytes", flush_bytes)?)
            .map_err(|_| PyValueError::new_err("flush_bytes is too large"))?;
        let first_part_no = non_negative("first_part_no", first_part_no)?;
        let w = parts::PartWriter::new(&final_dir, &tmp_dir, part_size, flush_bytes, first_part_no)
            .map_err(to_pyerr)?;
        Ok(Self {
            inner: Mutex::new(w),
            size: AtomicU64::new(0),
        })
    }

    /// Copy `data` into the writer's buffer (no I/O); True once >= flush_bytes are buffered.
    fn feed(&self, data: &[u8]) -> PyResult<bool> {
        let mut g = lock(&self.inner, "PartWriter")?;
        let full = g.feed(data).map_err(to_pyerr)?;
        self.size.store(g.size(), Ordering::Relaxed);
        Ok(full)
    }

    /// Parts sealed so far, from index `start` on (to send them on while the rest is cut).
    #[pyo3(signature = (start=0))]
    fn sealed_parts(&self, py: Python<'_>, start: usize) -> PyResult<Vec<Py<PyPartInfo>>> {
        let g = lock(&self.inner, "PartWriter")?;
        g.sealed()
            .iter()
            .skip(start)
            .map(|p| {
                Py::new(
                    py,
                    PyPartInfo {
                        part_no: p.part_no,
                        size: p.size,
                        sha256: p.sha256.clone(),
                        path: p.path.to_string_lossy().into_owned(),
                        crcs: p.block_crc32c.clone(),
                    },
                )
            })
            .collect()
    }

    /// Hash and write buffered bytes, sealing parts that filled up. GIL released.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let mut g = lock(&self.inner, "PartWriter")?;
        let w: &mut parts::PartWriter = &mut g;
        py.detach(|| w.flush()).map_err(to_pyerr)
    }

    /// Flush, seal the last (short) part, fsync the directory. GIL released.
    fn finish(&self, py: Python<'_>) -> PyResult<PyWrittenObject> {
        let mut g = lock(&self.inner, "PartWriter")?;
        let w: &mut parts::PartWriter = &mut g;
        let obj = py.detach(|| w.finish()).map_err(to_pyerr)?;
        let parts = obj
            .parts
            .into_iter()
            .map(|p| {
                Py::new(
                    py,
                    PyPartInfo {
                        part_no: p.part_no,
                        size: p.size,
                        sha256: p.sha256,
                        path: p.path.to_string_lossy().into_owned(),
                        crcs: p.block_crc32c,
                    },
                )
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyWrittenObject {
            size: obj.size,
            sha256: obj.sha256,
            md5: obj.md5,
            parts,
        })
    }

    /// Remove the temp file and every part this writer renamed into place. GIL released.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        let mut g = lock(&self.inner, "PartWriter")?;
        let w: &mut parts::PartWriter = &mut g;
        py.detach(|| w.abort()).map_err(to_pyerr)
    }

    /// Bytes fed so far.
    #[getter]
    fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }
}

/// One part file a RangeReader may read.
#[pyclass(module = "amberio._core", name = "PartRef", frozen)]
struct PyPartRef {
    #[pyo3(get)]
    path: String,
    #[pyo3(get)]
    size: u64,
    #[pyo3(get)]
    sha256: String,
    crcs: Option<Vec<u8>>,
    spec: range::PartSpec,
}

#[pymethods]
impl PyPartRef {
    #[new]
    #[pyo3(signature = (path, size, sha256, block_crc32c = None))]
    fn new(path: String, size: i64, sha256: String, block_crc32c: Option<&[u8]>) -> PyResult<Self> {
        let size = non_negative("size", size)?;
        let crcs = block_crc32c.map(<[u8]>::to_vec);
        let spec =
            range::PartSpec::new(path.clone(), size, &sha256, crcs.clone()).map_err(to_pyerr)?;
        Ok(Self {
            path,
            size,
            sha256,
            crcs,
            spec,
        })
    }

    #[getter]
    fn block_crc32c<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.crcs.as_deref().map(|c| PyBytes::new(py, c))
    }

    fn __repr__(&self) -> String {
        format!(
            "PartRef(path='{}', size={}, sha256='{}', block_crc32c={})",
            self.path,
            self.size,
            self.sha256,
            match &self.crcs {
                Some(c) => format!("<{} bytes>", c.len()),
                None => "None".to_string(),
            }
        )
    }
}

/// Yields verified bytes of consecutive parts, `length` bytes from `offset`.
#[pyclass(module = "amberio._core", name = "RangeReader")]
struct PyRangeReader {
    inner: Mutex<range::RangeReader>,
    remaining: AtomicU64,
}

#[pymethods]
impl PyRangeReader {
    #[new]
    #[pyo3(signature = (parts, offset, length, chunk_size = 1048576))]
    fn new(parts: &Bound<'_, PyAny>, offset: i64, length: i64, chunk_size: i64) -> PyResult<Self> {
        let offset = non_negative("offset", offset)?;
        let length = non_negative("length", length)?;
        let chunk_size = non_negative("chunk_size", chunk_size)?;
        let mut specs = Vec::new();
        for item in parts.try_iter()? {
            let item = item?;
            let part = item.cast::<PyPartRef>()?;
            specs.push(part.get().spec.clone());
        }
        let r = range::RangeReader::new(specs, offset, length, chunk_size).map_err(to_pyerr)?;
        Ok(Self {
            inner: Mutex::new(r),
            remaining: AtomicU64::new(length),
        })
    }

    /// Next chunk (at most chunk_size bytes), or None when done. GIL released.
    fn read_chunk<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let mut g = lock(&self.inner, "RangeReader")?;
        let reader: &mut range::RangeReader = &mut g;
        let n = reader.next_len().map_err(to_pyerr)?;
        if n == 0 {
            return Ok(None);
        }
        // The bytes object is filled in place: no copy between Rust and Python.
        let chunk = PyBytes::new_with(py, n, |buf| {
            py.detach(|| reader.fill(buf)).map_err(to_pyerr)
        })?;
        self.remaining.store(reader.remaining(), Ordering::Relaxed);
        Ok(Some(chunk))
    }

    /// (index into `parts`, block CRCs) for parts that arrived without CRCs and were verified.
    fn computed_block_crcs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let g = lock(&self.inner, "RangeReader")?;
        g.computed_block_crcs()
            .iter()
            .map(|(i, c)| (*i, PyBytes::new(py, c)).into_pyobject(py))
            .collect()
    }

    #[getter]
    fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Relaxed)
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let integrity = py.get_type::<IntegrityError>();
    // str(e) is the message alone (args stay (message, path)).
    let str_fn = py.eval(
        c"lambda self: str(self.args[0]) if self.args else ''",
        None,
        None,
    )?;
    integrity.setattr("__str__", str_fn)?;
    m.add("IntegrityError", integrity)?;
    m.add("BLOCK_SIZE", BLOCK_SIZE)?;
    m.add_function(wrap_pyfunction!(slot_for_path, m)?)?;
    m.add_function(wrap_pyfunction!(sha256_hex, m)?)?;
    m.add_function(wrap_pyfunction!(block_crc32c, m)?)?;
    m.add_function(wrap_pyfunction!(crc64nvme, m)?)?;
    m.add_function(wrap_pyfunction!(verify_part, m)?)?;
    m.add_class::<PyObjectHasher>()?;
    m.add_class::<PyPartInfo>()?;
    m.add_class::<PyWrittenObject>()?;
    m.add_class::<PyPartWriter>()?;
    m.add_class::<PyPartRef>()?;
    m.add_class::<PyRangeReader>()?;
    Ok(())
}
