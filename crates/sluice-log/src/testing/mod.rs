//! Test support shared by this crate's tests and by other backends' tests:
//! a fault-injecting in-memory filesystem and the `Log` contract suite.

pub mod contract;
pub mod memfs;

pub use memfs::MemFs;
