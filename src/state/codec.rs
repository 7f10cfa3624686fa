//! The changelog value encoding: postcard (serde, varints, floats bit-exact), so a
//! restored baseline is the same number the detector held, not a decimal round trip.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::StateError;

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Unit tests: every state saved must be finite (issue 24: no NaN or infinity in any
    // detector's state, whatever the input).
    #[cfg(test)]
    if let Err(e) = super::finite::check(v) {
        panic!("state to save is not finite: {e}");
    }
    postcard::to_stdvec(v).expect("state types serialize")
}

pub fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StateError> {
    postcard::from_bytes(bytes).map_err(|e| StateError::corrupt(key, e))
}

/// Like [`decode`], borrowing strings and byte slices from `bytes` (no copies).
pub fn decode_borrowed<'a, T: serde::Deserialize<'a>>(
    key: &str,
    bytes: &'a [u8],
) -> Result<T, StateError> {
    postcard::from_bytes(bytes).map_err(|e| StateError::corrupt(key, e))
}

/// Serde for fixed arrays longer than serde's built-in 32 (ring buffers, seasonal slots).
pub mod array {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize, const N: usize>(
        a: &[T; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        a.as_slice().serialize(s)
    }

    /// Straight into the array: through a `Vec` it was an allocation per restored key.
    pub fn deserialize<'de, D, T, const N: usize>(d: D) -> Result<[T; N], D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default + Copy,
    {
        d.deserialize_seq(ArrayVisitor::<T, N>(PhantomData))
    }

    struct ArrayVisitor<T, const N: usize>(PhantomData<T>);

    impl<'de, T: Deserialize<'de> + Default + Copy, const N: usize> Visitor<'de>
        for ArrayVisitor<T, N>
    {
        type Value = [T; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a sequence of {N} elements")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[T; N], A::Error> {
            let mut a = [T::default(); N];
            let mut len = 0;
            while let Some(x) = seq.next_element::<T>()? {
                if let Some(slot) = a.get_mut(len) {
                    *slot = x;
                }
                len += 1;
            }
            if len != N {
                return Err(A::Error::custom(format!(
                    "expected {N} elements, found {len}"
                )));
            }
            Ok(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Ring {
        #[serde(with = "array")]
        buf: [f32; 64],
        x: f64,
    }

    #[test]
    fn floats_and_long_arrays_round_trip_exactly() {
        let mut buf = [0f32; 64];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i as f32).sqrt() * 0.1;
        }
        let r = Ring {
            buf,
            x: 0.1 + 0.2, // not representable in short decimal form
        };
        let back: Ring = decode("k", &encode(&r)).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.x.to_bits(), (0.1f64 + 0.2).to_bits());
    }

    #[test]
    fn owned_byte_vectors_read_back_as_borrowed_slices() {
        // DetectorSet writes Vec<u8> parts and reads them back as &[u8] (restore speed):
        // postcard encodes both as a length and the raw bytes.
        let rec: Vec<(u16, String, Vec<u8>)> = vec![(3, "ewma_z".into(), vec![0, 255, 7])];
        let bytes = encode(&rec);
        let back: Vec<(u16, &str, &[u8])> = decode_borrowed("k", &bytes).unwrap();
        assert_eq!(back, vec![(3, "ewma_z", &[0u8, 255, 7][..])]);
    }

    #[test]
    fn arrays_of_another_length_are_an_error() {
        #[derive(Debug, serde::Deserialize)]
        struct Four {
            #[serde(with = "array")]
            _a: [f32; 4],
        }
        for n in [3usize, 5] {
            let bytes = encode(&(vec![1f32; n],));
            assert!(decode::<Four>("k", &bytes).is_err(), "{n} elements");
        }
    }

    #[test]
    fn truncated_records_are_an_error_naming_the_key() {
        let bytes = encode(&(1u32, 2.5f64));
        let e = decode::<(u32, f64)>("k:S-1", &bytes[..3]).unwrap_err();
        assert!(e.to_string().contains("k:S-1"), "{e}");
    }
}
