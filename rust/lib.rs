//! resumable_fast's native core: S2 record framing and batch accumulation.
//!
//! The modules below are plain Rust, covered by `cargo test`; `binding` is
//! the only place that knows about Python and is built for the extension.

pub mod batcher;
pub mod framing;

#[cfg(feature = "python")]
mod binding;
