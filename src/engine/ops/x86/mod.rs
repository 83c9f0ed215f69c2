//! The instruction-set kernels: compiled for x86-64, run only on a CPU that has the features
//! ([`super::Isa::detect`]).

// The kernels index accumulators by channel and vector together.
#![allow(clippy::needless_range_loop)]

pub(crate) mod conv;
pub(crate) mod lanes;
pub(crate) mod planes;
