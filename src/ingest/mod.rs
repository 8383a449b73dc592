//! Every non-OTLP way agent sessions reach aotel: transcript import and watch, the old `/events` API.
//! Each one turns its input into OTLP (`model::Batch`) and hands it to the one `Writer`.

pub mod client;
pub mod import;
pub mod legacy;
pub mod spans;
pub mod transcript;
pub mod watch;
