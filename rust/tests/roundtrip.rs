//! Property tests: whatever chunks go in, the framed batches are valid S2
//! `AppendInput` JSON within S2's limits, and their record bodies concatenate
//! back to exactly the text that was pushed, at consecutive sequence numbers.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use resumable_fast::batcher::{Accumulator, BatchLimits, Frame, FrameBuffer};
use resumable_fast::framing::{
    data_record_size, fence_append_input, merge_append_inputs, MAX_BATCH_RECORDS, MAX_METERED_BYTES,
};
use serde_json::Value;

fn bodies(frame: &Frame<'_>, token: &str) -> Vec<String> {
    let input: Value = serde_json::from_slice(frame.body).expect("valid JSON");
    assert_eq!(input["fencing_token"], token);
    assert_eq!(input["match_seq_num"], frame.match_seq_num);
    let records = input["records"].as_array().expect("records array");
    assert_eq!(records.len(), frame.records);
    assert!(!records.is_empty() && records.len() <= MAX_BATCH_RECORDS);
    records
        .iter()
        .map(|record| {
            assert!(record.get("headers").is_none());
            record["body"].as_str().expect("string body").to_owned()
        })
        .collect()
}

fn chunk_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => any::<String>(),
        2 => "[\"\\\\\n\r\t\u{0}-\u{1f}a-zé😀\u{2028}]{0,40}",
        1 => (1usize..3_000).prop_map(|n| "ß\"".repeat(n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_round_trip(
        chunks in prop::collection::vec(chunk_strategy(), 0..60),
        max_records in 1usize..20,
        max_bytes in 64usize..4_096,
        seal_every in 1usize..10,
    ) {
        let limits = BatchLimits::new(max_records, max_bytes, Duration::from_millis(5)).unwrap();
        let mut acc = Accumulator::new(limits);
        let token = "session-\"tok\\";
        let slot = acc.open(token, 1).unwrap();
        let start = Instant::now();
        let mut frames = FrameBuffer::default();
        let mut pending: Vec<&str> = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            let now = start + Duration::from_millis(i as u64);
            pending.push(chunk);
            if pending.len() == 1 {
                acc.arm(slot, now).unwrap();
            }
            let due = acc.due(now);
            if pending.len() >= max_records || i % seal_every == 0 || !due.is_empty() {
                prop_assert!(due.iter().all(|&s| s == slot));
                acc.frame_into(slot, &pending, &mut frames).unwrap();
                pending.clear();
            }
        }
        acc.frame_into(slot, &pending, &mut frames).unwrap();
        acc.close(slot);

        let mut expected_seq = 1u64;
        let mut text = String::new();
        for frame in frames.iter() {
            prop_assert_eq!(frame.match_seq_num, expected_seq);
            expected_seq += frame.records as u64;
            let records = bodies(&frame, token);
            prop_assert!(records.len() <= max_records);
            let metered: usize = records.iter().map(|b| data_record_size(b)).sum();
            // A single record may exceed a small byte cap on its own, never S2's.
            prop_assert!(metered <= max_bytes || records.len() == 1);
            prop_assert!(metered <= MAX_METERED_BYTES);
            for body in records {
                prop_assert!(!body.is_empty());
                text.push_str(&body);
            }
        }
        prop_assert_eq!(&text, &chunks.concat());

        // Consecutive batches merged into one append keep every record, in
        // order, under the first batch's token and sequence number.
        let parts: Vec<Vec<u8>> = frames.iter().map(|frame| frame.body.to_vec()).collect();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let first_seq_num = frames.iter().next().map(|frame| frame.match_seq_num);
        if let Some(first_seq_num) = first_seq_num {
            let merged = merge_append_inputs(&slices).expect("framed batches merge");
            let input: Value = serde_json::from_slice(&merged).expect("valid JSON");
            prop_assert_eq!(&input["match_seq_num"], &Value::from(first_seq_num));
            prop_assert_eq!(&input["fencing_token"], token);
            let merged_text: String = input["records"]
                .as_array()
                .expect("records")
                .iter()
                .map(|record| record["body"].as_str().expect("body"))
                .collect();
            prop_assert_eq!(merged_text, text);
        }
    }

    #[test]
    fn fence_input_round_trips(token in any::<String>(), seq in any::<Option<u64>>()) {
        let body = fence_append_input(&token, Some("prev"), seq);
        let input: Value = serde_json::from_slice(&body).unwrap();
        prop_assert_eq!(&input["records"][0]["body"], &Value::from(token));
        prop_assert_eq!(&input["records"][0]["headers"], &serde_json::json!([["", "fence"]]));
        prop_assert_eq!(&input["fencing_token"], "prev");
        match seq {
            Some(n) => prop_assert_eq!(&input["match_seq_num"], &Value::from(n)),
            None => prop_assert!(input.get("match_seq_num").is_none()),
        }
    }
}
