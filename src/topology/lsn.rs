//! WAL positions (LSNs): a 64-bit byte position written `X/Y` in hex.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A WAL position. Ordered; differences are bytes of WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl FromStr for Lsn {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Lsn, Self::Err> {
        const BAD: &str = "an LSN looks like 0/16B3748";
        let (hi, lo) = s.trim().split_once('/').ok_or(BAD)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| BAD)?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| BAD)?;
        Ok(Lsn(u64::from(hi) << 32 | u64::from(lo)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let l: Lsn = "0/16B3748".parse().unwrap();
        assert_eq!(l, Lsn(0x16B3748));
        assert_eq!(l.to_string(), "0/16B3748");
        assert_eq!("1/0".parse::<Lsn>().unwrap(), Lsn(1 << 32));
        assert!("16B3748".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }
}
