//! Per-stream accumulation of chunks into framed S2 append batches, and the
//! linger clock shared by every stream of one context.
//!
//! A batch is sealed when it reaches its record count or its metered-size cap,
//! or when the linger time since its first chunk has passed. Sealing frames
//! the batch as a complete `AppendInput` JSON body carrying the stream's
//! fencing token and the `match_seq_num` it must land at, so a retried batch
//! can never land twice.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::framing::{
    close_append_input, data_record_size, split_for_records, write_data_record, APPEND_INPUT_OPEN,
    MAX_BATCH_RECORDS, MAX_FENCING_TOKEN_BYTES, MAX_METERED_BYTES,
};

/// When a batch is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    max_records: usize,
    max_bytes: usize,
    linger: Duration,
}

/// A configuration or usage error of the accumulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    InvalidRecordCount(usize),
    InvalidByteLimit(usize),
    FencingTokenTooLong(usize),
    UnknownStream(u64),
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidRecordCount(n) => write!(
                f,
                "batch_size must be between 1 and {MAX_BATCH_RECORDS} records, got {n}"
            ),
            Self::InvalidByteLimit(n) => write!(
                f,
                "max_batch_bytes must be between 1 and {MAX_METERED_BYTES}, got {n}"
            ),
            Self::FencingTokenTooLong(n) => write!(
                f,
                "fencing token is {n} bytes, S2 allows at most {MAX_FENCING_TOKEN_BYTES}"
            ),
            Self::UnknownStream(slot) => write!(f, "no open stream in slot {slot}"),
        }
    }
}

impl std::error::Error for BatchError {}

impl BatchLimits {
    pub fn new(max_records: usize, max_bytes: usize, linger: Duration) -> Result<Self, BatchError> {
        if !(1..=MAX_BATCH_RECORDS).contains(&max_records) {
            return Err(BatchError::InvalidRecordCount(max_records));
        }
        if !(1..=MAX_METERED_BYTES).contains(&max_bytes) {
            return Err(BatchError::InvalidByteLimit(max_bytes));
        }
        Ok(Self {
            max_records,
            max_bytes,
            linger,
        })
    }
}

/// One sealed batch: a complete `AppendInput` body, ready to POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub body: Vec<u8>,
    pub records: usize,
    pub match_seq_num: u64,
}

/// What a push changed, for the caller to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushOutcome {
    /// Sealed frames are waiting in `take_frames`.
    pub frames_ready: bool,
    /// The linger clock went from idle to armed: whoever sleeps until
    /// `next_deadline` must look again.
    pub wake_timer: bool,
}

struct OpenStream {
    fencing_token: String,
    next_seq_num: u64,
    body: Vec<u8>,
    records: usize,
    metered: usize,
    generation: u64,
    sealed: Vec<Frame>,
}

impl OpenStream {
    fn seal(&mut self) {
        let mut body = std::mem::take(&mut self.body);
        close_append_input(
            &mut body,
            Some(&self.fencing_token),
            Some(self.next_seq_num),
        );
        self.sealed.push(Frame {
            body,
            records: self.records,
            match_seq_num: self.next_seq_num,
        });
        self.next_seq_num += self.records as u64;
        self.records = 0;
        self.metered = 0;
        self.generation += 1;
    }
}

/// Batches for many streams, with one linger clock for all of them.
pub struct Accumulator {
    limits: BatchLimits,
    streams: HashMap<u64, OpenStream>,
    /// Deadlines in arming order. The linger is the same for every stream, so
    /// arming order is deadline order; entries whose batch was sealed early
    /// are stale and skipped by generation.
    lingering: VecDeque<(Instant, u64, u64)>,
    next_slot: u64,
}

impl Accumulator {
    pub fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            streams: HashMap::new(),
            lingering: VecDeque::new(),
            next_slot: 0,
        }
    }

    pub fn limits(&self) -> BatchLimits {
        self.limits
    }

    /// Opens a stream whose next data record lands at `next_seq_num`, written
    /// under `fencing_token`. Returns the slot to push into.
    pub fn open(&mut self, fencing_token: &str, next_seq_num: u64) -> Result<u64, BatchError> {
        if fencing_token.len() > MAX_FENCING_TOKEN_BYTES {
            return Err(BatchError::FencingTokenTooLong(fencing_token.len()));
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        self.streams.insert(
            slot,
            OpenStream {
                fencing_token: fencing_token.to_owned(),
                next_seq_num,
                body: Vec::new(),
                records: 0,
                metered: 0,
                generation: 0,
                sealed: Vec::new(),
            },
        );
        Ok(slot)
    }

    /// Adds one chunk. A chunk larger than a record is split into several.
    pub fn push(&mut self, slot: u64, chunk: &str, now: Instant) -> Result<PushOutcome, BatchError> {
        let limits = self.limits;
        let stream = self
            .streams
            .get_mut(&slot)
            .ok_or(BatchError::UnknownStream(slot))?;
        let mut outcome = PushOutcome::default();
        for piece in split_for_records(chunk) {
            let size = data_record_size(piece);
            if stream.records > 0 && stream.metered + size > limits.max_bytes {
                stream.seal();
                outcome.frames_ready = true;
            }
            if stream.records == 0 {
                outcome.wake_timer |= self.lingering.is_empty();
                self.lingering
                    .push_back((now + limits.linger, slot, stream.generation));
                stream.body.reserve(APPEND_INPUT_OPEN.len() + piece.len() + 64);
                stream.body.extend_from_slice(APPEND_INPUT_OPEN);
            } else {
                stream.body.push(b',');
            }
            write_data_record(&mut stream.body, piece);
            stream.records += 1;
            stream.metered += size;
            if stream.records >= limits.max_records || stream.metered >= limits.max_bytes {
                stream.seal();
                outcome.frames_ready = true;
            }
        }
        Ok(outcome)
    }

    /// Takes the sealed frames of one stream, oldest first.
    pub fn take_frames(&mut self, slot: u64) -> Result<Vec<Frame>, BatchError> {
        let stream = self
            .streams
            .get_mut(&slot)
            .ok_or(BatchError::UnknownStream(slot))?;
        Ok(std::mem::take(&mut stream.sealed))
    }

    /// Seals every batch whose linger has passed by `now`; returns the slots
    /// that have frames waiting.
    pub fn seal_due(&mut self, now: Instant) -> Vec<u64> {
        let mut slots = Vec::new();
        while let Some(&(deadline, slot, generation)) = self.lingering.front() {
            if deadline > now {
                break;
            }
            self.lingering.pop_front();
            if let Some(stream) = self.streams.get_mut(&slot) {
                if stream.generation == generation && stream.records > 0 {
                    stream.seal();
                    slots.push(slot);
                }
            }
        }
        slots
    }

    /// The earliest time a lingering batch may be due; `None` when idle.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.lingering.front().map(|&(deadline, _, _)| deadline)
    }

    /// Seals what is left of a stream, closes it and returns its frames.
    pub fn close(&mut self, slot: u64) -> Result<Vec<Frame>, BatchError> {
        let mut stream = self
            .streams
            .remove(&slot)
            .ok_or(BatchError::UnknownStream(slot))?;
        if stream.records > 0 {
            stream.seal();
        }
        Ok(stream.sealed)
    }

    /// Drops a stream and whatever it had not handed out.
    pub fn discard(&mut self, slot: u64) {
        self.streams.remove(&slot);
    }

    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(records: usize, bytes: usize, linger_ms: u64) -> BatchLimits {
        BatchLimits::new(records, bytes, Duration::from_millis(linger_ms)).unwrap()
    }

    fn text(frame: &Frame) -> String {
        String::from_utf8(frame.body.clone()).unwrap()
    }

    #[test]
    fn rejects_limits_outside_s2_bounds() {
        let linger = Duration::from_millis(5);
        assert!(BatchLimits::new(0, 10, linger).is_err());
        assert!(BatchLimits::new(1001, 10, linger).is_err());
        assert!(BatchLimits::new(10, MAX_METERED_BYTES + 1, linger).is_err());
    }

    #[test]
    fn seals_on_record_count_with_running_seq_nums() {
        let mut acc = Accumulator::new(limits(2, MAX_METERED_BYTES, 1000));
        let slot = acc.open("session-x", 1).unwrap();
        let now = Instant::now();
        let first = acc.push(slot, "a", now).unwrap();
        assert!(!first.frames_ready && first.wake_timer);
        let second = acc.push(slot, "b\"", now).unwrap();
        assert!(second.frames_ready && !second.wake_timer);
        acc.push(slot, "c", now).unwrap();
        acc.push(slot, "d", now).unwrap();
        let frames = acc.take_frames(slot).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(
            text(&frames[0]),
            "{\"records\":[{\"body\":\"a\"},{\"body\":\"b\\\"\"}],\
             \"fencing_token\":\"session-x\",\"match_seq_num\":1}"
        );
        assert_eq!(frames[1].match_seq_num, 3);
        assert!(acc.take_frames(slot).unwrap().is_empty());
    }

    #[test]
    fn seals_on_metered_bytes() {
        let mut acc = Accumulator::new(limits(1000, 30, 1000));
        let slot = acc.open("t", 1).unwrap();
        let now = Instant::now();
        acc.push(slot, "0123456789", now).unwrap(); // 18 metered
        let outcome = acc.push(slot, "0123456789", now).unwrap(); // would be 36
        assert!(outcome.frames_ready);
        let frames = acc.take_frames(slot).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].records, 1);
        let rest = acc.close(slot).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].match_seq_num, 2);
    }

    #[test]
    fn linger_seals_only_after_deadline() {
        let mut acc = Accumulator::new(limits(10, MAX_METERED_BYTES, 50));
        let a = acc.open("a", 1).unwrap();
        let b = acc.open("b", 1).unwrap();
        let start = Instant::now();
        acc.push(a, "x", start).unwrap();
        let later = start + Duration::from_millis(20);
        let outcome = acc.push(b, "y", later).unwrap();
        assert!(!outcome.wake_timer, "clock already armed by stream a");
        assert_eq!(acc.next_deadline(), Some(start + Duration::from_millis(50)));
        assert!(acc.seal_due(start + Duration::from_millis(49)).is_empty());
        assert_eq!(acc.seal_due(start + Duration::from_millis(50)), vec![a]);
        assert_eq!(acc.seal_due(later + Duration::from_millis(50)), vec![b]);
        assert_eq!(acc.next_deadline(), None);
        assert_eq!(acc.take_frames(a).unwrap().len(), 1);
    }

    #[test]
    fn stale_deadline_of_size_sealed_batch_is_skipped() {
        let mut acc = Accumulator::new(limits(1, MAX_METERED_BYTES, 10));
        let slot = acc.open("t", 1).unwrap();
        let now = Instant::now();
        acc.push(slot, "x", now).unwrap();
        assert!(acc.seal_due(now + Duration::from_secs(1)).is_empty());
        assert_eq!(acc.take_frames(slot).unwrap().len(), 1);
    }

    #[test]
    fn oversize_chunk_becomes_several_records_and_batches() {
        let mut acc = Accumulator::new(limits(10, MAX_METERED_BYTES, 10));
        let slot = acc.open("t", 1).unwrap();
        // 3 MiB of text: three full records and a short fourth one.
        let chunk = "é".repeat(MAX_METERED_BYTES * 3 / 2);
        acc.push(slot, &chunk, Instant::now()).unwrap();
        let frames = acc.close(slot).unwrap();
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| f.records == 1));
        assert_eq!(
            frames.iter().map(|f| f.match_seq_num).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn unknown_slot_and_long_token_are_errors() {
        let mut acc = Accumulator::new(limits(10, 100, 10));
        assert_eq!(
            acc.push(7, "x", Instant::now()),
            Err(BatchError::UnknownStream(7))
        );
        assert!(acc.open(&"t".repeat(37), 1).is_err());
        let slot = acc.open("t", 1).unwrap();
        acc.discard(slot);
        assert_eq!(acc.open_streams(), 0);
    }
}
