//! `--shard I/N`: a deterministic split of the file list, stable across machines.
//!
//! A file belongs to shard `floor(fnv1a64(rel) * N / 2^64)`, where `rel` is its path relative
//! to the command-line argument it was found under (`2021/06/IMG_0001.jpg` for
//! `tagger score /photos` finding `/photos/2021/06/IMG_0001.jpg`; the file name for a file given
//! directly), as UTF-8/OS bytes with `/` separators, and `fnv1a64` is 64-bit FNV-1a. The
//! assignment depends only on that relative path and N, not on the mount point, the host, the
//! order files are found in or how many exist, so N machines (or the pods of a Kubernetes
//! Indexed Job) running the same command with shards `0/N` .. `N-1/N` score every file exactly
//! once. Taking the high bits (multiply-shift) rather than `hash % N` keeps the split even for
//! every N.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// One part of an N-way split: shard `index` of `count`, 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, `0..count`.
    pub index: u64,
    /// How many shards in all, at least 1.
    pub count: u64,
}

impl Shard {
    /// The whole list (`0/1`).
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether the file at relative path `rel` belongs to this shard.
    pub fn contains(&self, rel: &[u8]) -> bool {
        self.count <= 1 || shard_of(rel, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::bad_parameter("shard", format!("`{s}`: {why}"));
        let (index, count) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("expected I/N, e.g. 0/4 (shard I of N, 0-based)"))?;
        let index: u64 = index
            .trim()
            .parse()
            .map_err(|_| bad("I is not a whole number"))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| bad("N is not a whole number"))?;
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index >= count {
            return Err(bad("I must be less than N (shards are numbered 0 to N-1)"));
        }
        Ok(Shard { index, count })
    }
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// The shard (`0..count`) of relative path `rel` in an N-way split.
pub fn shard_of(rel: &[u8], count: u64) -> u64 {
    ((u128::from(fnv1a64(rel)) * u128::from(count)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn parses_and_validates() {
        assert_eq!(
            "1/3".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 3 }
        );
        assert_eq!(" 0 / 1 ".parse::<Shard>().unwrap(), Shard::ALL);
        for bad in ["", "3", "3/3", "4/3", "0/0", "-1/3", "a/3", "1/b", "1/2/3"] {
            let err = bad.parse::<Shard>().unwrap_err();
            assert_eq!(err.code(), "bad_parameter", "{bad:?}");
        }
    }

    #[test]
    fn every_path_is_in_exactly_one_shard_and_the_split_is_even() {
        let n = 4;
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let rel = format!("2021/{:02}/IMG_{i:04}.jpg", i % 12);
            let owners: Vec<u64> = (0..n)
                .filter(|&index| Shard { index, count: n }.contains(rel.as_bytes()))
                .collect();
            assert_eq!(owners.len(), 1, "{rel}");
            counts[owners[0] as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..=1150).contains(&c)),
            "{counts:?}"
        );
    }
}
