//! End-to-end tests of the `diskimport` binary: differential conversions,
//! hostile inputs from the spec (sections 3.3, 3.4, 3.9), CLI flags and
//! block-device targets on loop devices, and the HTTP source against a
//! real nginx and a fault-injecting server (section 3.6).

mod archive_review;
mod block;
mod cdi_contract;
mod cli;
mod common;
mod compression;
mod containerdisk;
mod contract;
mod convert;
mod http;
mod http_review;
mod import;
mod net;
mod oci;
mod operator;
mod qcow2;
mod qcow2_hostile;
mod qcow2_review;
mod registry;
mod registry_cdi;
mod registry_net;
mod target;
mod upload;
mod upload_edges;
