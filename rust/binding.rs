//! The Python binding: converts types and releases the GIL around the core's
//! work. Everything else lives in the plain Rust modules.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyKeyError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::batcher::{self, BatchError, BatchLimits, Frame};
use crate::framing;

/// Each frame as `(body, end_seq_num)`: the tail the stream has once the
/// frame has landed, which tells a retry whether its first attempt landed.
type PyFrame<'py> = (Bound<'py, PyBytes>, u64);

fn to_py_error(error: BatchError) -> PyErr {
    match error {
        BatchError::UnknownStream(_) => PyKeyError::new_err(error.to_string()),
        _ => PyValueError::new_err(error.to_string()),
    }
}

fn frames_to_py(py: Python<'_>, frames: Vec<Frame>) -> Vec<PyFrame<'_>> {
    frames
        .into_iter()
        .map(|frame| {
            let end_seq_num = frame.match_seq_num + frame.records as u64;
            (PyBytes::new(py, &frame.body), end_seq_num)
        })
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

/// Framing state for every stream of one context, and their linger clock.
///
/// Each stream's pending chunks live in a Python list owned by the caller:
/// appending to it is the only per-chunk work, and the list is handed over,
/// emptied and framed with the GIL released once per batch.
#[pyclass(frozen, module = "resumable_fast._core")]
struct Accumulator {
    core: Mutex<batcher::Accumulator>,
    pending: Mutex<HashMap<u64, Py<PyList>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in the core cannot leave state that matters more than the
    // process it would take down, so a poisoned lock is still used.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Accumulator {
    fn pending_list<'py>(&self, py: Python<'py>, slot: u64) -> PyResult<Bound<'py, PyList>> {
        lock(&self.pending)
            .get(&slot)
            .map(|list| list.bind(py).clone())
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
        let texts = chunks
            .iter()
            .map(chunk_text)
            .collect::<PyResult<Vec<Cow<'_, str>>>>()?;
        list.del_slice(0, count)?;
        let frames = py
            .detach(|| lock(&self.core).frame(slot, &texts))
            .map_err(to_py_error)?;
        Ok(frames_to_py(py, frames))
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
            core: Mutex::new(batcher::Accumulator::new(limits)),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// Opens a stream whose pending chunks are collected in `pending`.
    fn open(
        &self,
        fencing_token: &str,
        next_seq_num: u64,
        pending: Bound<'_, PyList>,
    ) -> PyResult<u64> {
        let slot = lock(&self.core)
            .open(fencing_token, next_seq_num)
            .map_err(to_py_error)?;
        lock(&self.pending).insert(slot, pending.unbind());
        Ok(slot)
    }

    /// Starts the linger clock of a stream's pending batch. True when the
    /// clock was idle, so the caller's timer must look at it again.
    fn arm(&self, slot: u64) -> PyResult<bool> {
        lock(&self.core)
            .arm(slot, Instant::now())
            .map_err(to_py_error)
    }

    /// Frames every pending chunk of a stream; returns its frames, oldest first.
    fn drain<'py>(&self, py: Python<'py>, slot: u64) -> PyResult<Vec<PyFrame<'py>>> {
        let list = self.pending_list(py, slot)?;
        self.frame_pending(py, slot, &list)
    }

    /// Frames the pending chunks of every stream whose linger has passed.
    fn seal_due<'py>(&self, py: Python<'py>) -> PyResult<Vec<(u64, Vec<PyFrame<'py>>)>> {
        let slots = py.detach(|| lock(&self.core).due(Instant::now()));
        let mut sealed = Vec::with_capacity(slots.len());
        for slot in slots {
            let list = self.pending_list(py, slot)?;
            let frames = self.frame_pending(py, slot, &list)?;
            if !frames.is_empty() {
                sealed.push((slot, frames));
            }
        }
        Ok(sealed)
    }

    /// Seconds until the next lingering batch may be due, or None when idle.
    fn next_deadline_in(&self) -> Option<f64> {
        let deadline = lock(&self.core).next_deadline()?;
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

    /// Forgets a stream and whatever it had pending.
    fn discard(&self, slot: u64) {
        lock(&self.core).close(slot);
        lock(&self.pending).remove(&slot);
    }

    #[getter]
    fn open_streams(&self) -> usize {
        lock(&self.core).open_streams()
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

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Accumulator>()?;
    module.add_function(wrap_pyfunction!(fence_append_input, module)?)?;
    module.add("MAX_METERED_BYTES", framing::MAX_METERED_BYTES)?;
    module.add("MAX_BATCH_RECORDS", framing::MAX_BATCH_RECORDS)?;
    module.add("MAX_FENCING_TOKEN_BYTES", framing::MAX_FENCING_TOKEN_BYTES)?;
    Ok(())
}
