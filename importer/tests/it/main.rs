//! End-to-end tests of the `diskimport` binary: differential conversions,
//! hostile inputs from the spec (sections 3.3, 3.4, 3.9), CLI flags and
//! block-device targets on loop devices.

mod block;
mod cli;
mod common;
mod compression;
mod convert;
mod qcow2;
mod qcow2_hostile;
mod target;
