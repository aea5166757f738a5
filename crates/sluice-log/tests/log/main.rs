//! Integration tests of the log layer, one binary (link time matters on 2 cores).

mod background;
mod contract;
mod crash;
mod faults;
mod golden;
mod model;
mod wal;
