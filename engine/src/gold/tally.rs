//! Sums as differences: a fixed-size vector of integer sums that differential dataflow can carry
//! as the *difference* of a record.
//!
//! A mean is a sum and a count; both add up when records arrive and subtract when they are
//! retracted. Carrying them as the difference type means the dataflow never re-reads a group to
//! recompute an average: `consolidate` adds the changes, the sink adds those to what it holds.
//! Integers (vitals in hundredths, stays in seconds) keep the sums exact, so a retraction cancels
//! exactly and `is_zero` is true when a group is gone.
//!
//! ```
//! use cds_engine::gold::Tally;
//! use differential_dataflow::input::Input;
//!
//! timely::example(|scope| {
//!     // Two patients in ICU (key 2), one leaves: the occupancy tally of ICU ends at 1.
//!     let (mut input, patients) = scope.new_collection::<(u8, u64), isize>();
//!     patients
//!         .explode(|(dept, _patient)| Some((dept, Tally::<1>::new([1]))))
//!         .consolidate()
//!         .inspect(|(dept, _t, tally)| assert_eq!((*dept, tally.get(0)), (2, 1)));
//!     input.insert((2, 10));
//!     input.insert((2, 11));
//!     input.remove((2, 11));
//! });
//! ```

use std::fmt;

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `N` integer sums that add, subtract and scale together.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tally<const N: usize>(pub [i64; N]);

impl<const N: usize> Tally<N> {
    pub fn new(values: [i64; N]) -> Self {
        Tally(values)
    }

    /// The `i`-th sum (0 when out of range).
    pub fn get(&self, i: usize) -> i64 {
        self.0.get(i).copied().unwrap_or(0)
    }
}

impl<const N: usize> Default for Tally<N> {
    fn default() -> Self {
        Tally([0; N])
    }
}

impl<const N: usize> fmt::Debug for Tally<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl<const N: usize> IsZero for Tally<N> {
    fn is_zero(&self) -> bool {
        self.0.iter().all(|x| *x == 0)
    }
}

impl<const N: usize> Semigroup for Tally<N> {
    fn plus_equals(&mut self, rhs: &Self) {
        for (a, b) in self.0.iter_mut().zip(rhs.0.iter()) {
            *a += *b;
        }
    }
}

impl<const N: usize> Monoid for Tally<N> {
    fn zero() -> Self {
        Self::default()
    }
}

impl<const N: usize> Abelian for Tally<N> {
    fn negate(&mut self) {
        for a in self.0.iter_mut() {
            *a = -*a;
        }
    }
}

impl<const N: usize> Multiply<isize> for Tally<N> {
    type Output = Self;
    fn multiply(mut self, rhs: &isize) -> Self {
        let k = *rhs as i64;
        for a in self.0.iter_mut() {
            *a *= k;
        }
        self
    }
}

impl<const N: usize> Serialize for Tally<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(N)?;
        for x in &self.0 {
            t.serialize_element(x)?;
        }
        t.end()
    }
}

impl<'de, const N: usize> Deserialize<'de> for Tally<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for V<N> {
            type Value = Tally<N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{N} integers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tally<N>, A::Error> {
                let mut out = [0i64; N];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Tally(out))
            }
        }
        d.deserialize_tuple(N, V::<N>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_scales_and_cancels() {
        let mut a = Tally::new([1, 2, 3]);
        a.plus_equals(&Tally::new([1, 1, 1]).multiply(&-1));
        assert_eq!(a, Tally::new([0, 1, 2]));
        let mut b = a;
        b.negate();
        a.plus_equals(&b);
        assert!(a.is_zero());
    }
}
