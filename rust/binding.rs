//! The Python binding: converts types and releases the GIL around the core's
//! work. Everything else lives in the plain Rust modules.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::batcher::{self, BatchError, BatchLimits, Frame};
use crate::framing;

/// Chunks shorter than this are copied with the GIL held: releasing and
/// re-taking it costs more than copying a few hundred bytes. Longer chunks
/// (escaping, splitting, sealing) run with the GIL released.
const DETACH_THRESHOLD_BYTES: usize = 1024;

const FRAMES_READY: u8 = 1;
const WAKE_TIMER: u8 = 2;

fn to_py_error(error: BatchError) -> PyErr {
    match error {
        BatchError::UnknownStream(_) => PyKeyError::new_err(error.to_string()),
        _ => PyValueError::new_err(error.to_string()),
    }
}

fn frames_to_py(py: Python<'_>, frames: Vec<Frame>) -> Vec<Bound<'_, PyBytes>> {
    frames
        .into_iter()
        .map(|frame| PyBytes::new(py, &frame.body))
        .collect()
}

/// Batches for every stream of one context, and their shared linger clock.
#[pyclass(frozen, module = "resumable_fast._core")]
struct Accumulator {
    inner: Mutex<batcher::Accumulator>,
}

impl Accumulator {
    fn lock(&self) -> MutexGuard<'_, batcher::Accumulator> {
        // A panic inside the core cannot leave a batch half-written in a way
        // that matters more than losing the process, so poisoning is ignored.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
            inner: Mutex::new(batcher::Accumulator::new(limits)),
        })
    }

    /// Opens a stream; returns its slot.
    fn open(&self, fencing_token: &str, next_seq_num: u64) -> PyResult<u64> {
        self.lock()
            .open(fencing_token, next_seq_num)
            .map_err(to_py_error)
    }

    /// Adds a chunk. Returns bit flags: 1 = frames ready, 2 = wake the timer.
    fn push(&self, py: Python<'_>, slot: u64, chunk: &Bound<'_, PyString>) -> PyResult<u8> {
        let text = chunk.to_str()?;
        let outcome = if text.len() < DETACH_THRESHOLD_BYTES {
            self.lock().push(slot, text, Instant::now())
        } else {
            py.detach(|| self.lock().push(slot, text, Instant::now()))
        }
        .map_err(to_py_error)?;
        Ok(u8::from(outcome.frames_ready) * FRAMES_READY
            | u8::from(outcome.wake_timer) * WAKE_TIMER)
    }

    /// The sealed `AppendInput` bodies of one stream, oldest first.
    fn take_frames<'py>(&self, py: Python<'py>, slot: u64) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let frames = self.lock().take_frames(slot).map_err(to_py_error)?;
        Ok(frames_to_py(py, frames))
    }

    /// Seals every batch whose linger has passed; returns their slots.
    fn seal_due(&self, py: Python<'_>) -> Vec<u64> {
        py.detach(|| self.lock().seal_due(Instant::now()))
    }

    /// Seconds until the next lingering batch may be due, or None when idle.
    fn next_deadline_in(&self) -> Option<f64> {
        let deadline = self.lock().next_deadline()?;
        Some(
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64(),
        )
    }

    /// Seals what is left of a stream, closes it and returns its frames.
    fn close<'py>(&self, py: Python<'py>, slot: u64) -> PyResult<Vec<Bound<'py, PyBytes>>> {
        let frames = py.detach(|| self.lock().close(slot)).map_err(to_py_error)?;
        Ok(frames_to_py(py, frames))
    }

    /// Drops a stream and whatever it had not handed out.
    fn discard(&self, slot: u64) {
        self.lock().discard(slot);
    }

    #[getter]
    fn open_streams(&self) -> usize {
        self.lock().open_streams()
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
    module.add("FRAMES_READY", FRAMES_READY)?;
    module.add("WAKE_TIMER", WAKE_TIMER)?;
    module.add("MAX_METERED_BYTES", framing::MAX_METERED_BYTES)?;
    module.add("MAX_BATCH_RECORDS", framing::MAX_BATCH_RECORDS)?;
    module.add("MAX_FENCING_TOKEN_BYTES", framing::MAX_FENCING_TOKEN_BYTES)?;
    Ok(())
}
