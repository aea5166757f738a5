//! Integration tests of the log layer, one binary (link time matters on 2 cores).

mod contract;
mod model;
mod faults;
mod crash;
mod golden;
