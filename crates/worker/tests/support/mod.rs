//! Helpers shared by the worker's process-level tests.
#![allow(dead_code)]

pub mod cluster;
