//! The Python binding: converts types and releases the GIL around the core's
//! work. Everything else lives in the plain Rust modules.

use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::append_input;
use crate::batcher::{self, BatchError, BatchLimits, FrameBuffer};
use crate::framing;

/// Batches of at least this many bytes are framed with the GIL released.
/// Releasing and re-taking it costs about 1 µs here, while framing a small
/// batch costs less than that (`make bench-core`); from 4 KiB on the framing
/// takes several times longer than the release, so other threads get the
/// interpreter while it runs.
const DETACH_THRESHOLD_BYTES: usize = 4096;

/// Each frame as `(body, end_seq_num)`: the tail the stream has once the
/// frame has landed, which tells a retry whether its first attempt landed.
type PyFrame<'py> = (Bound<'py, PyBytes>, u64);

fn to_py_error(error: BatchError) -> PyErr {
    match error {
        BatchError::UnknownStream(_) => PyKeyError::new_err(error.to_string()),
        _ => PyValueError::new_err(error.to_string()),
    }
}

fn frames_to_py<'py>(py: Python<'py>, frames: &FrameBuffer) -> Vec<PyFrame<'py>> {
    frames
        .iter()
        .map(|frame| (PyBytes::new(py, frame.body), frame.end_seq_num()))
        .collect()
}

/// The text of a chunk. A lone surrogate cannot be stored as UTF-8; it is
/// stored as U+FFFD rather than losing the chunk.
fn chunk_text<'a>(chunk: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
    if let Ok(text) = chunk.to_str() {
        return Ok(Cow::Borrowed(text));
    }
    let encoded = chunk.call_method1("encode", ("utf-8", "surrogatepass"))?;
    let bytes = encoded.cast_into::<PyBytes>()?;
    Ok(Cow::Owned(framing::replace_lone_surrogates(
        bytes.as_bytes(),
    )))
}

struct Inner {
    core: batcher::Accumulator,
    /// Each open stream's pending list, indexed by slot like the core's.
    pending: Vec<Option<Py<PyList>>>,
    /// Reused for every batch; taken out while framing runs without the GIL.
    buffer: FrameBuffer,
}

/// Framing state for every stream of one context, and their linger clock.
///
/// Each stream's pending chunks live in a Python list owned by the caller:
/// appending to it is the only per-chunk work, and the list is handed over,
/// emptied and framed with the GIL released once per batch.
#[pyclass(frozen, module = "resumable_fast._core")]
struct Accumulator {
    inner: Mutex<Inner>,
}

impl Accumulator {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in the core cannot leave state that matters more than the
        // process it would take down, so a poisoned lock is still used.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn pending_list<'py>(&self, py: Python<'py>, slot: u64) -> PyResult<Bound<'py, PyList>> {
        usize::try_from(slot)
            .ok()
            .and_then(|index| {
                self.lock()
                    .pending
                    .get(index)
                    .and_then(|list| list.as_ref().map(|l| l.bind(py).clone()))
            })
            .ok_or_else(|| to_py_error(BatchError::UnknownStream(slot)))
    }

    /// Empties a stream's pending list and frames what it held.
    fn frame_pending<'py>(
        &self,
        py: Python<'py>,
        slot: u64,
        list: &Bound<'py, PyList>,
    ) -> PyResult<Vec<PyFrame<'py>>> {
        let count = list.len();
        let mut chunks = Vec::with_capacity(count);
        for item in list.iter() {
            chunks.push(
                item.cast_into::<PyString>().map_err(|error| {
                    PyTypeError::new_err(format!("chunks must be str: {error}"))
                })?,
            );
        }
        let mut texts: Vec<Cow<'_, str>> = Vec::with_capacity(count);
        for chunk in &chunks {
            texts.push(chunk_text(chunk)?);
        }
        // SAFETY: `list` is a live list and the GIL is held; deleting a
        // slice of it does not borrow anything `texts` borrows from, since
        // each `str` is held by `chunks` too.
        if unsafe {
            ffi::PyList_SetSlice(
                list.as_ptr(),
                0,
                count as ffi::Py_ssize_t,
                std::ptr::null_mut(),
            )
        } < 0
        {
            return Err(PyErr::fetch(py));
        }
        let frame = || {
            let mut inner = self.lock();
            let mut buffer = std::mem::take(&mut inner.buffer);
            buffer.clear();
            inner
                .core
                .frame_into(slot, &texts, &mut buffer)
                .map(|()| buffer)
        };
        let bytes: usize = texts.iter().map(|text| text.len()).sum();
        let framed = if bytes >= DETACH_THRESHOLD_BYTES {
            py.detach(frame)
        } else {
            frame()
        };
        let buffer = framed.map_err(to_py_error)?;
        let frames = frames_to_py(py, &buffer);
        self.lock().buffer = buffer;
        Ok(frames)
    }
}

#[pymethods]
impl Accumulator {
    #[new]
    fn new(batch_size: usize, max_batch_bytes: usize, linger_ms: f64) -> PyResult<Self> {
        if !linger_ms.is_finite() || linger_ms < 0.0 {
            return Err(PyValueError::new_err(format!(
                "linger_ms must be a finite number >= 0, got {linger_ms}"
            )));
        }
        let linger = Duration::from_secs_f64(linger_ms / 1000.0);
        let limits = BatchLimits::new(batch_size, max_batch_bytes, linger).map_err(to_py_error)?;
        Ok(Self {
            inner: Mutex::new(Inner {
                core: batcher::Accumulator::new(limits),
                pending: Vec::new(),
                buffer: FrameBuffer::default(),
            }),
        })
    }

    /// Opens a stream whose pending chunks are collected in `pending`.
    fn open(
        &self,
        fencing_token: &str,
        next_seq_num: u64,
        pending: Bound<'_, PyList>,
    ) -> PyResult<u64> {
        let mut inner = self.lock();
        let slot = inner
            .core
            .open(fencing_token, next_seq_num)
            .map_err(to_py_error)?;
        let index = slot as usize;
        if inner.pending.len() <= index {
            inner.pending.resize_with(index + 1, || None);
        }
        inner.pending[index] = Some(pending.unbind());
        Ok(slot)
    }

    /// Starts the linger clock of a stream's pending batch. True when the
    /// clock was idle, so the caller's timer must look at it again.
    fn arm(&self, slot: u64) -> PyResult<bool> {
        self.lock()
            .core
            .arm(slot, Instant::now())
            .map_err(to_py_error)
    }

    /// Frames every pending chunk of a stream; returns its frames, oldest first.
    fn drain<'py>(&self, py: Python<'py>, slot: u64) -> PyResult<Vec<PyFrame<'py>>> {
        let list = self.pending_list(py, slot)?;
        self.frame_pending(py, slot, &list)
    }

    /// Frames the pending chunks of every stream whose linger has passed.
    fn seal_due<'py>(&self, py: Python<'py>) -> Vec<(u64, Vec<PyFrame<'py>>)> {
        let slots = self.lock().core.due(Instant::now());
        let mut sealed = Vec::with_capacity(slots.len());
        for slot in slots {
            // A stream whose chunks cannot be framed keeps them in its list
            // (framing fails before the list is emptied) and reports the error
            // at its own next drain; the other due streams are still sealed.
            let Ok(list) = self.pending_list(py, slot) else {
                continue;
            };
            if let Ok(frames) = self.frame_pending(py, slot, &list) {
                if !frames.is_empty() {
                    sealed.push((slot, frames));
                }
            }
        }
        sealed
    }

    /// Seconds until the next lingering batch may be due, or None when idle.
    fn next_deadline_in(&self) -> Option<f64> {
        let deadline = self.lock().core.next_deadline()?;
        Some(
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64(),
        )
    }

    /// Frames what is pending, closes the stream and returns its last frames.
    fn close<'py>(&self, py: Python<'py>, slot: u64) -> PyResult<Vec<PyFrame<'py>>> {
        let frames = self.drain(py, slot)?;
        self.discard(slot);
        Ok(frames)
    }

    /// Reserves the next `records` sequence numbers of a stream for records
    /// the caller frames itself (a heartbeat fence); returns the first.
    fn reserve(&self, slot: u64, records: u64) -> PyResult<u64> {
        self.lock().core.reserve(slot, records).map_err(to_py_error)
    }

    /// Forgets a stream and whatever it had pending.
    fn discard(&self, slot: u64) {
        let mut inner = self.lock();
        if let Some(list) = inner.pending.get_mut(slot as usize) {
            if list.take().is_some() {
                inner.core.close(slot);
            }
        }
    }

    #[getter]
    fn open_streams(&self) -> usize {
        self.lock().core.open_streams()
    }
}

/// A whole `AppendInput` body holding one fence command.
#[pyfunction]
#[pyo3(signature = (new_token, fencing_token, match_seq_num=None))]
fn fence_append_input<'py>(
    py: Python<'py>,
    new_token: &str,
    fencing_token: Option<&str>,
    match_seq_num: Option<u64>,
) -> Bound<'py, PyBytes> {
    PyBytes::new(
        py,
        &framing::fence_append_input(new_token, fencing_token, match_seq_num),
    )
}

/// Consecutive framed batches of one stream joined into one `AppendInput`.
#[pyfunction]
fn merge_append_inputs<'py>(
    py: Python<'py>,
    parts: Vec<Bound<'py, PyBytes>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let slices: Vec<&[u8]> = parts.iter().map(|part| part.as_bytes()).collect();
    let merged = framing::merge_append_inputs(&slices)
        .ok_or_else(|| PyValueError::new_err("parts must be framed data batches"))?;
    Ok(PyBytes::new(py, &merged))
}

/// An `AppendInput` checked as S2 checks it (`append_input`), as
/// `(bodies, headed, fencing_token, match_seq_num, new_fencing_token)`:
/// every record's body, and `(index, [[name, value], ...])` for each record
/// with headers. A `ValueError` names the check it failed.
#[pyfunction]
fn check_append_input<'py>(py: Python<'py>, input: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let checked = append_input::check_append_input(input)
        .map_err(|invalid| PyValueError::new_err(invalid.0))?;
    let bodies = PyList::new(py, checked.bodies.iter().map(|body| body.as_ref()))?;
    let headed = PyList::empty(py);
    for (index, headers) in &checked.headed {
        let pairs = PyList::empty(py);
        for (name, value) in headers {
            pairs.append(PyList::new(py, [name.as_ref(), value.as_ref()])?)?;
        }
        headed.append((*index, pairs))?;
    }
    // The new token is the fence's body: the same str object as in `bodies`.
    let new_fencing_token = match checked.last_fence {
        Some(index) => Some(bodies.get_item(index)?),
        None => None,
    };
    (
        bodies,
        headed,
        checked.fencing_token.as_deref(),
        checked.match_seq_num,
        new_fencing_token,
    )
        .into_pyobject(py)
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Accumulator>()?;
    module.add_function(wrap_pyfunction!(fence_append_input, module)?)?;
    module.add_function(wrap_pyfunction!(merge_append_inputs, module)?)?;
    module.add_function(wrap_pyfunction!(check_append_input, module)?)?;
    module.add("MAX_METERED_BYTES", framing::MAX_METERED_BYTES)?;
    module.add("MAX_BATCH_RECORDS", framing::MAX_BATCH_RECORDS)?;
    module.add("MAX_FENCING_TOKEN_BYTES", framing::MAX_FENCING_TOKEN_BYTES)?;
    Ok(())
}
