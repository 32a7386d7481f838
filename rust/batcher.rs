//! Accumulation of chunks into framed S2 append batches, and the linger clock
//! shared by every stream of one context.
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

struct OpenStream {
    fencing_token: String,
    next_seq_num: u64,
    /// Bumped whenever the stream's pending chunks are framed, so linger
    /// deadlines armed before that are recognised as stale.
    generation: u64,
    armed: bool,
}

impl OpenStream {
    fn seal(&mut self, body: &mut Vec<u8>, records: usize, frames: &mut Vec<Frame>) {
        let mut sealed = std::mem::take(body);
        close_append_input(
            &mut sealed,
            Some(&self.fencing_token),
            Some(self.next_seq_num),
        );
        frames.push(Frame {
            body: sealed,
            records,
            match_seq_num: self.next_seq_num,
        });
        self.next_seq_num += records as u64;
    }
}

/// Frames the pending chunks of many streams, with one linger clock for all.
///
/// The caller keeps each stream's pending chunks (appending one is the only
/// per-chunk work on its side), arms the stream's linger clock when its first
/// pending chunk arrives, and hands all pending chunks to [`Accumulator::frame`]
/// when the batch is full or the linger has passed.
pub struct Accumulator {
    limits: BatchLimits,
    streams: HashMap<u64, OpenStream>,
    /// Deadlines in arming order. The linger is the same for every stream, so
    /// arming order is deadline order; entries whose chunks were framed early
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
    /// under `fencing_token`. Returns its slot.
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
                generation: 0,
                armed: false,
            },
        );
        Ok(slot)
    }

    /// Starts the linger clock of a stream's pending batch at `now`, unless it
    /// runs already. Returns true when the clock went from idle to armed, so
    /// whoever sleeps until [`Accumulator::next_deadline`] must look again.
    pub fn arm(&mut self, slot: u64, now: Instant) -> Result<bool, BatchError> {
        let stream = self
            .streams
            .get_mut(&slot)
            .ok_or(BatchError::UnknownStream(slot))?;
        if stream.armed {
            return Ok(false);
        }
        stream.armed = true;
        let wake = self.lingering.is_empty();
        self.lingering
            .push_back((now + self.limits.linger, slot, stream.generation));
        Ok(wake)
    }

    /// Frames every pending chunk of a stream into append batches, in order.
    /// A batch is sealed at the record limit or before its metered size would
    /// pass the byte limit; a chunk larger than a record becomes several.
    pub fn frame<S: AsRef<str>>(
        &mut self,
        slot: u64,
        chunks: &[S],
    ) -> Result<Vec<Frame>, BatchError> {
        let limits = self.limits;
        let stream = self
            .streams
            .get_mut(&slot)
            .ok_or(BatchError::UnknownStream(slot))?;
        stream.generation += 1;
        stream.armed = false;
        let mut frames = Vec::new();
        let mut body = Vec::new();
        let mut records = 0;
        let mut metered = 0;
        for chunk in chunks {
            for piece in split_for_records(chunk.as_ref()) {
                let size = data_record_size(piece);
                if records > 0
                    && (records == limits.max_records || metered + size > limits.max_bytes)
                {
                    stream.seal(&mut body, records, &mut frames);
                    records = 0;
                    metered = 0;
                }
                if records == 0 {
                    body.reserve(APPEND_INPUT_OPEN.len() + 128);
                    body.extend_from_slice(APPEND_INPUT_OPEN);
                } else {
                    body.push(b',');
                }
                write_data_record(&mut body, piece);
                records += 1;
                metered += size;
            }
        }
        if records > 0 {
            stream.seal(&mut body, records, &mut frames);
        }
        Ok(frames)
    }

    /// The slots whose linger has passed by `now`; their pending chunks are due.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut slots = Vec::new();
        while let Some(&(deadline, slot, generation)) = self.lingering.front() {
            if deadline > now {
                break;
            }
            self.lingering.pop_front();
            if let Some(stream) = self.streams.get_mut(&slot) {
                if stream.armed && stream.generation == generation {
                    stream.armed = false;
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

    /// Forgets a stream.
    pub fn close(&mut self, slot: u64) {
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
        let frames = acc.frame(slot, &["a", "b\"", "c"]).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(
            text(&frames[0]),
            "{\"records\":[{\"body\":\"a\"},{\"body\":\"b\\\"\"}],\
             \"fencing_token\":\"session-x\",\"match_seq_num\":1}"
        );
        assert_eq!((frames[1].match_seq_num, frames[1].records), (3, 1));
        let next = acc.frame(slot, &["d"]).unwrap();
        assert_eq!(next[0].match_seq_num, 4);
        assert!(acc.frame(slot, &[] as &[&str]).unwrap().is_empty());
    }

    #[test]
    fn seals_before_passing_metered_bytes() {
        let mut acc = Accumulator::new(limits(1000, 30, 1000));
        let slot = acc.open("t", 1).unwrap();
        // 18 metered bytes each: two would be 36 > 30.
        let frames = acc.frame(slot, &["0123456789", "0123456789"]).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| f.records == 1));
        assert_eq!(frames[1].match_seq_num, 2);
    }

    #[test]
    fn linger_is_due_only_after_deadline_and_once() {
        let mut acc = Accumulator::new(limits(10, MAX_METERED_BYTES, 50));
        let a = acc.open("a", 1).unwrap();
        let b = acc.open("b", 1).unwrap();
        let start = Instant::now();
        assert!(
            acc.arm(a, start).unwrap(),
            "first armed clock wakes the timer"
        );
        assert!(!acc.arm(a, start).unwrap(), "already armed");
        let later = start + Duration::from_millis(20);
        assert!(
            !acc.arm(b, later).unwrap(),
            "clock already armed by stream a"
        );
        assert_eq!(acc.next_deadline(), Some(start + Duration::from_millis(50)));
        assert!(acc.due(start + Duration::from_millis(49)).is_empty());
        assert_eq!(acc.due(start + Duration::from_millis(50)), vec![a]);
        assert_eq!(acc.due(later + Duration::from_millis(50)), vec![b]);
        assert_eq!(acc.next_deadline(), None);
    }

    #[test]
    fn framing_early_makes_the_deadline_stale() {
        let mut acc = Accumulator::new(limits(1, MAX_METERED_BYTES, 10));
        let slot = acc.open("t", 1).unwrap();
        let now = Instant::now();
        acc.arm(slot, now).unwrap();
        assert_eq!(acc.frame(slot, &["x"]).unwrap().len(), 1);
        assert!(acc.due(now + Duration::from_secs(1)).is_empty());
        // Re-armed after framing: a fresh deadline counts.
        acc.arm(slot, now).unwrap();
        assert_eq!(acc.due(now + Duration::from_secs(1)), vec![slot]);
    }

    #[test]
    fn oversize_chunk_becomes_several_records_and_batches() {
        let mut acc = Accumulator::new(limits(10, MAX_METERED_BYTES, 10));
        let slot = acc.open("t", 1).unwrap();
        // 3 MiB of text: three full records and a short fourth one.
        let chunk = "é".repeat(MAX_METERED_BYTES * 3 / 2);
        let frames = acc.frame(slot, &[chunk]).unwrap();
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
        assert_eq!(acc.frame(7, &["x"]), Err(BatchError::UnknownStream(7)));
        assert_eq!(
            acc.arm(7, Instant::now()),
            Err(BatchError::UnknownStream(7))
        );
        assert!(acc.open(&"t".repeat(37), 1).is_err());
        let slot = acc.open("t", 1).unwrap();
        acc.close(slot);
        assert_eq!(acc.open_streams(), 0);
    }
}
