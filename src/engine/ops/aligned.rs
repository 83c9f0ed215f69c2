//! f32 buffers that start on a cache line: a 64-byte vector load from an unaligned `Vec<f32>`
//! (malloc aligns to 16 bytes) splits across two lines, and the channels-in-lanes kernels load
//! whole lines (16 channels of a pixel) at every step.

/// `len` floats starting on a 64-byte boundary inside an over-allocated `Vec`.
#[derive(Clone)]
pub(crate) struct AlignedBuf {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

/// Floats per cache line.
const LINE: usize = 16;

impl AlignedBuf {
    /// `len` zeros.
    pub(crate) fn zeros(len: usize) -> AlignedBuf {
        let buf = vec![0f32; len + LINE];
        let start = buf.as_ptr().align_offset(LINE * 4).min(LINE);
        AlignedBuf { buf, start, len }
    }

    /// A copy of `values`.
    pub(crate) fn from_slice(values: &[f32]) -> AlignedBuf {
        let mut a = AlignedBuf::zeros(values.len());
        a.as_mut_slice().copy_from_slice(values);
        a
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        &self.buf[self.start..][..self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..][..self.len]
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_cache_line_and_holds_its_values() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let values: Vec<f32> = (0..len).map(|i| i as f32).collect();
            let a = AlignedBuf::from_slice(&values);
            assert_eq!(a.as_slice(), &values[..]);
            assert_eq!(a.as_slice().as_ptr() as usize % 64, 0);
        }
    }
}
