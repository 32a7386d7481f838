//! resumable_fast's native core: S2 record framing, batch accumulation and
//! the embedded stores' checks of an append.
//!
//! The modules below are plain Rust, covered by `cargo test`; `binding` is
//! the only place that knows about Python and is built for the extension.

pub mod append_input;
pub mod batcher;
pub mod framing;

#[cfg(feature = "python")]
mod binding;
