//! Sans-IO encodings of everything the embedded log writes: record batches, varints
//! and segment indexes. Pure functions over bytes, tested without files.

pub mod batch;
pub mod index;
pub mod varint;
