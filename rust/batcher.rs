//! Accumulation of chunks into framed S2 append batches, and the linger clock
//! shared by every stream of one context.
//!
//! A batch is sealed when it reaches its record count or its metered-size cap,
//! or when the linger time since its first chunk has passed. Sealing frames
//! the batch as a complete `AppendInput` JSON body carrying the stream's
//! fencing token and the `match_seq_num` it must land at, so a retried batch
//! can never land twice.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::framing::{
    data_record_size, split_for_records, write_data_record, write_json_string, write_u64,
    APPEND_INPUT_OPEN, MAX_BATCH_RECORDS, MAX_FENCING_TOKEN_BYTES, MAX_METERED_BYTES,
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

/// One sealed batch inside a [`FrameBuffer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    records: usize,
    match_seq_num: u64,
}

/// Sealed batches, written back to back into one reusable buffer.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

/// One sealed batch: a complete `AppendInput` body, ready to POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub body: &'a [u8],
    pub records: usize,
    pub match_seq_num: u64,
}

impl Frame<'_> {
    /// The stream's tail once this batch has landed.
    pub fn end_seq_num(&self) -> u64 {
        self.match_seq_num + self.records as u64
    }
}

impl FrameBuffer {
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Frame<'_>> {
        self.spans.iter().map(|span| Frame {
            body: &self.bytes[span.start..span.end],
            records: span.records,
            match_seq_num: span.match_seq_num,
        })
    }
}

struct OpenStream {
    /// `],"fencing_token":"<token>","match_seq_num":`, escaped once at open.
    closing: Vec<u8>,
    next_seq_num: u64,
    /// The epoch of the linger deadline armed for the pending batch, if any.
    armed: Option<u64>,
}

impl OpenStream {
    fn seal(&mut self, out: &mut FrameBuffer, start: usize, records: usize) {
        out.bytes.extend_from_slice(&self.closing);
        write_u64(&mut out.bytes, self.next_seq_num);
        out.bytes.push(b'}');
        out.spans.push(Span {
            start,
            end: out.bytes.len(),
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
/// pending chunk arrives, and hands all pending chunks to
/// [`Accumulator::frame_into`] when the batch is full or the linger has passed.
pub struct Accumulator {
    limits: BatchLimits,
    /// Indexed by slot; closed slots are reused.
    streams: Vec<Option<OpenStream>>,
    free_slots: Vec<u64>,
    /// `(deadline, slot, epoch)` in arming order. The linger is the same for
    /// every stream, so arming order is deadline order; an entry whose epoch
    /// is no longer its stream's armed one was framed early and is skipped.
    lingering: VecDeque<(Instant, u64, u64)>,
    next_epoch: u64,
}

impl Accumulator {
    pub fn new(limits: BatchLimits) -> Self {
        Self {
            limits,
            streams: Vec::new(),
            free_slots: Vec::new(),
            lingering: VecDeque::new(),
            next_epoch: 0,
        }
    }

    fn stream(&mut self, slot: u64) -> Result<&mut OpenStream, BatchError> {
        usize::try_from(slot)
            .ok()
            .and_then(|index| self.streams.get_mut(index))
            .and_then(Option::as_mut)
            .ok_or(BatchError::UnknownStream(slot))
    }

    /// Opens a stream whose next data record lands at `next_seq_num`, written
    /// under `fencing_token`. Returns its slot.
    pub fn open(&mut self, fencing_token: &str, next_seq_num: u64) -> Result<u64, BatchError> {
        if fencing_token.len() > MAX_FENCING_TOKEN_BYTES {
            return Err(BatchError::FencingTokenTooLong(fencing_token.len()));
        }
        let mut closing = b"],\"fencing_token\":".to_vec();
        write_json_string(&mut closing, fencing_token);
        closing.extend_from_slice(b",\"match_seq_num\":");
        let stream = OpenStream {
            closing,
            next_seq_num,
            armed: None,
        };
        match self.free_slots.pop() {
            Some(slot) => {
                self.streams[slot as usize] = Some(stream);
                Ok(slot)
            }
            None => {
                self.streams.push(Some(stream));
                Ok((self.streams.len() - 1) as u64)
            }
        }
    }

    /// Starts the linger clock of a stream's pending batch at `now`, unless it
    /// runs already. Returns true when the clock went from idle to armed, so
    /// whoever sleeps until [`Accumulator::next_deadline`] must look again.
    pub fn arm(&mut self, slot: u64, now: Instant) -> Result<bool, BatchError> {
        let epoch = self.next_epoch;
        let linger = self.limits.linger;
        let stream = self.stream(slot)?;
        if stream.armed.is_some() {
            return Ok(false);
        }
        stream.armed = Some(epoch);
        self.next_epoch += 1;
        let wake = self.lingering.is_empty();
        self.lingering.push_back((now + linger, slot, epoch));
        Ok(wake)
    }

    /// Frames every pending chunk of a stream into append batches appended to
    /// `out`, in order. A batch is sealed at the record limit or before its
    /// metered size would pass the byte limit; a chunk larger than a record
    /// becomes several records.
    pub fn frame_into<S: AsRef<str>>(
        &mut self,
        slot: u64,
        chunks: &[S],
        out: &mut FrameBuffer,
    ) -> Result<(), BatchError> {
        let limits = self.limits;
        let stream = self.stream(slot)?;
        stream.armed = None;
        let mut start = out.bytes.len();
        let mut records = 0;
        let mut metered = 0;
        for chunk in chunks {
            for piece in split_for_records(chunk.as_ref()) {
                let size = data_record_size(piece);
                if records > 0
                    && (records == limits.max_records || metered + size > limits.max_bytes)
                {
                    stream.seal(out, start, records);
                    start = out.bytes.len();
                    records = 0;
                    metered = 0;
                }
                if records == 0 {
                    out.bytes.extend_from_slice(APPEND_INPUT_OPEN);
                } else {
                    out.bytes.push(b',');
                }
                write_data_record(&mut out.bytes, piece);
                records += 1;
                metered += size;
            }
        }
        if records > 0 {
            stream.seal(out, start, records);
        }
        Ok(())
    }

    /// The slots whose linger has passed by `now`; their pending chunks are due.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut slots = Vec::new();
        while let Some(&(deadline, slot, epoch)) = self.lingering.front() {
            if deadline > now {
                break;
            }
            self.lingering.pop_front();
            if let Ok(stream) = self.stream(slot) {
                if stream.armed == Some(epoch) {
                    stream.armed = None;
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

    /// Reserves the next `records` sequence numbers of a stream for records
    /// the caller frames itself (a fence); returns the first. Batches framed
    /// later continue after them.
    pub fn reserve(&mut self, slot: u64, records: u64) -> Result<u64, BatchError> {
        let stream = self.stream(slot)?;
        let first = stream.next_seq_num;
        stream.next_seq_num += records;
        Ok(first)
    }

    /// Forgets a stream; its slot may be handed out again.
    pub fn close(&mut self, slot: u64) {
        if self.stream(slot).is_ok() {
            self.streams[slot as usize] = None;
            self.free_slots.push(slot);
        }
    }

    pub fn open_streams(&self) -> usize {
        self.streams.len() - self.free_slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(records: usize, bytes: usize, linger_ms: u64) -> BatchLimits {
        BatchLimits::new(records, bytes, Duration::from_millis(linger_ms)).unwrap()
    }

    /// `(body, records, match_seq_num)` of each frame.
    fn frame(acc: &mut Accumulator, slot: u64, chunks: &[&str]) -> Vec<(String, usize, u64)> {
        let mut out = FrameBuffer::default();
        acc.frame_into(slot, chunks, &mut out).unwrap();
        out.iter()
            .map(|f| {
                (
                    String::from_utf8(f.body.to_vec()).unwrap(),
                    f.records,
                    f.match_seq_num,
                )
            })
            .collect()
    }

    #[test]
    fn reserved_seq_nums_are_skipped_by_later_batches() {
        let mut acc = Accumulator::new(limits(10, MAX_METERED_BYTES, 100));
        let slot = acc.open("session-a", 1).unwrap();
        assert_eq!(frame(&mut acc, slot, &["a", "b"])[0].2, 1);
        assert_eq!(acc.reserve(slot, 1).unwrap(), 3);
        let after = frame(&mut acc, slot, &["c"]);
        assert_eq!(after[0].2, 4);
        assert!(after[0].0.ends_with(",\"match_seq_num\":4}"));
        assert!(acc.reserve(slot + 1, 1).is_err());
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
        let slot = acc.open("session-\"x", 1).unwrap();
        let frames = frame(&mut acc, slot, &["a", "b\"", "c"]);
        assert_eq!(frames.len(), 2);
        assert_eq!(
            frames[0].0,
            "{\"records\":[{\"body\":\"a\"},{\"body\":\"b\\\"\"}],\
             \"fencing_token\":\"session-\\\"x\",\"match_seq_num\":1}"
        );
        assert_eq!((frames[1].1, frames[1].2), (1, 3));
        assert_eq!(frame(&mut acc, slot, &["d"])[0].2, 4);
        assert!(frame(&mut acc, slot, &[]).is_empty());
    }

    #[test]
    fn seals_before_passing_metered_bytes() {
        let mut acc = Accumulator::new(limits(1000, 30, 1000));
        let slot = acc.open("t", 1).unwrap();
        // 18 metered bytes each: two would be 36 > 30.
        let frames = frame(&mut acc, slot, &["0123456789", "0123456789"]);
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|f| f.1 == 1));
        assert_eq!(frames[1].2, 2);
    }

    #[test]
    fn frame_buffer_keeps_frames_of_several_streams_apart() {
        let mut acc = Accumulator::new(limits(10, MAX_METERED_BYTES, 1000));
        let a = acc.open("a", 1).unwrap();
        let b = acc.open("b", 5).unwrap();
        let mut out = FrameBuffer::default();
        acc.frame_into(a, &["x"], &mut out).unwrap();
        acc.frame_into(b, &["y", "z"], &mut out).unwrap();
        let frames: Vec<Frame<'_>> = out.iter().collect();
        assert_eq!(out.len(), 2);
        assert_eq!((frames[0].end_seq_num(), frames[1].end_seq_num()), (2, 7));
        assert!(frames[1]
            .body
            .starts_with(b"{\"records\":[{\"body\":\"y\"}"));
        out.clear();
        assert!(out.is_empty());
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
        assert_eq!(frame(&mut acc, slot, &["x"]).len(), 1);
        assert!(acc.due(now + Duration::from_secs(1)).is_empty());
        // Re-armed after framing: the fresh deadline counts.
        acc.arm(slot, now).unwrap();
        assert_eq!(acc.due(now + Duration::from_secs(1)), vec![slot]);
    }

    #[test]
    fn reused_slot_ignores_the_previous_streams_deadline() {
        let mut acc = Accumulator::new(limits(10, MAX_METERED_BYTES, 10));
        let old = acc.open("old", 1).unwrap();
        let now = Instant::now();
        acc.arm(old, now).unwrap();
        acc.close(old);
        let new = acc.open("new", 1).unwrap();
        assert_eq!(new, old, "slots are reused");
        assert!(acc.due(now + Duration::from_secs(1)).is_empty());
        assert_eq!(acc.open_streams(), 1);
    }

    #[test]
    fn oversize_chunk_becomes_several_records_and_batches() {
        let mut acc = Accumulator::new(limits(10, MAX_METERED_BYTES, 10));
        let slot = acc.open("t", 1).unwrap();
        // 3 MiB of text: three full records and a short fourth one.
        let chunk = "é".repeat(MAX_METERED_BYTES * 3 / 2);
        let frames = frame(&mut acc, slot, &[&chunk]);
        assert_eq!(frames.len(), 4);
        assert!(frames.iter().all(|f| f.1 == 1));
        assert_eq!(
            frames.iter().map(|f| f.2).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn unknown_slot_and_long_token_are_errors() {
        let mut acc = Accumulator::new(limits(10, 100, 10));
        let mut out = FrameBuffer::default();
        assert_eq!(
            acc.frame_into(7, &["x"], &mut out),
            Err(BatchError::UnknownStream(7))
        );
        assert_eq!(
            acc.arm(7, Instant::now()),
            Err(BatchError::UnknownStream(7))
        );
        assert!(acc.open(&"t".repeat(37), 1).is_err());
        let slot = acc.open("t", 1).unwrap();
        acc.close(slot);
        assert_eq!(acc.open_streams(), 0);
        assert_eq!(
            acc.arm(slot, Instant::now()),
            Err(BatchError::UnknownStream(slot))
        );
    }
}
