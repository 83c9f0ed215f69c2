//! The instruction-set kernels: compiled for x86-64, run only on a CPU that has the features
//! ([`super::Isa::detect`]).

// The kernels index accumulators by channel and vector together.
#![allow(clippy::needless_range_loop)]

pub(crate) mod conv;
pub(crate) mod lanes;
pub(crate) mod maxpool;
pub(crate) mod planes;
pub(crate) mod winograd;

/// Whether the CPU is Intel's: its cores load a broadcast once into a register faster than
/// they fold it into each FMA, where AMD's Zen 4 is the other way round (see
/// [`conv::pointwise_passes`]).
pub(crate) fn intel() -> bool {
    #[cfg(test)]
    match FORCE_BROADCAST.load(std::sync::atomic::Ordering::Relaxed) {
        1 => return true,
        2 => return false,
        _ => {}
    }
    static INTEL: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        let id = std::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        vendor == b"GenuineIntel"
    });
    *INTEL
}

/// For tests: 1 makes [`intel`] answer yes, 2 no, 0 asks the CPU; so both ways of feeding the
/// FMAs run whatever the machine. (Tests running meanwhile may take either way: both give the
/// same sums to the bit.)
#[cfg(test)]
pub(crate) static FORCE_BROADCAST: std::sync::atomic::AtomicU8 =
    std::sync::atomic::AtomicU8::new(0);
