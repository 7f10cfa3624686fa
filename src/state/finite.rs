//! Test-only: walks any `Serialize` value and names every float in it that is NaN or
//! infinite. [`super::codec::encode`] runs it on every state it encodes in unit tests, so
//! each test that saves detector state (the durable tests, the hostile-input property
//! tests) also proves the state stayed finite.

use serde::ser::{self, Serialize};

#[derive(Debug)]
pub struct Found(String);

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Found(msg.to_string())
    }
}

/// `Err` naming the field path of the first non-finite float in `v`.
pub fn check<T: Serialize + ?Sized>(v: &T) -> Result<(), Found> {
    v.serialize(&mut Walker { path: Vec::new() })
}

struct Walker {
    path: Vec<String>,
}

impl Walker {
    fn float(&self, x: f64) -> Result<(), Found> {
        if x.is_finite() {
            Ok(())
        } else {
            Err(Found(format!("{x} at .{}", self.path.join("."))))
        }
    }

    fn nested<T: Serialize + ?Sized>(&mut self, name: String, v: &T) -> Result<(), Found> {
        self.path.push(name);
        let r = v.serialize(&mut *self);
        self.path.pop();
        r
    }
}

macro_rules! ok_scalars {
    ($($f:ident: $t:ty),*) => { $(fn $f(self, _: $t) -> Result<(), Found> { Ok(()) })* };
}

impl ser::Serializer for &mut Walker {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    ok_scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_char: char, serialize_str: &str, serialize_bytes: &[u8]);

    fn serialize_f32(self, v: f32) -> Result<(), Found> {
        self.float(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Found> {
        self.float(v)
    }
    fn serialize_none(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), Found> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Found> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Found> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<(), Found> {
        self.nested(variant.into(), v)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Found> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Found> {
        Ok(self)
    }
}

macro_rules! elements {
    ($($tr:ident :: $f:ident),*) => {$(
        impl ser::$tr for &mut Walker {
            type Ok = ();
            type Error = Found;
            fn $f<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Found> {
                self.nested("[]".into(), v)
            }
            fn end(self) -> Result<(), Found> {
                Ok(())
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for &mut Walker {
    type Ok = ();
    type Error = Found;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Found> {
        self.nested("{key}".into(), k)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Found> {
        self.nested("{value}".into(), v)
    }
    fn end(self) -> Result<(), Found> {
        Ok(())
    }
}

macro_rules! fields {
    ($($tr:ident),*) => {$(
        impl ser::$tr for &mut Walker {
            type Ok = ();
            type Error = Found;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                name: &'static str,
                v: &T,
            ) -> Result<(), Found> {
                self.nested(name.into(), v)
            }
            fn end(self) -> Result<(), Found> {
                Ok(())
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Inner {
        xs: [f32; 2],
    }

    #[derive(serde::Serialize)]
    struct Outer {
        a: f64,
        b: Option<f64>,
        inner: Inner,
        m: std::collections::BTreeMap<String, (u8, f64)>,
    }

    #[test]
    fn names_the_first_non_finite_float() {
        let mut v = Outer {
            a: 1.0,
            b: None,
            inner: Inner { xs: [0.0, 2.0] },
            m: [("k".to_string(), (1, 3.0))].into(),
        };
        assert!(check(&v).is_ok());
        v.inner.xs[1] = f32::NAN;
        assert_eq!(check(&v).unwrap_err().to_string(), "NaN at .inner.xs.[]");
        v.inner.xs[1] = 0.0;
        v.b = Some(f64::NEG_INFINITY);
        assert_eq!(check(&v).unwrap_err().to_string(), "-inf at .b");
        v.b = None;
        v.m.insert("z".into(), (2, f64::INFINITY));
        assert_eq!(check(&v).unwrap_err().to_string(), "inf at .m.{value}.[]");
    }
}
