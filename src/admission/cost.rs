//! What parsing a review will take in memory, known before anything is allocated: one
//! counting pass over the bytes that builds nothing. The bytes of a body say little about
//! it: an array of zeros is two bytes a value on the wire and 32 or more once parsed, so a
//! 4 MiB body can become 64 MiB of values. The webhook server charges this estimate against
//! its memory budget before the review is parsed for real.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Every parsed value: a `serde_json::Value` is 32 bytes, and an array that grew by
/// doubling may hold twice the slots it uses.
const PER_VALUE: usize = 64;
/// Every string, object keys included: its heap block and the allocator's bookkeeping. An
/// object member is charged its key as one more string value, which covers the key's
/// `String` and its share of the map's node.
const PER_STRING: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CostError {
    /// Counting stopped at `limit`: the parse would take more.
    #[error("parsing the review would take more than {limit} bytes")]
    OverLimit { limit: usize },
    /// Not JSON (or nested too deep); the review's own parse says what is wrong, and may
    /// take up to `counted` bytes before it finds out.
    #[error("{error}")]
    Json {
        error: serde_json::Error,
        counted: usize,
    },
}

/// The bytes parsing `body` into values would take, at most `limit`: counting stops as soon
/// as it passes the limit, so a hostile body costs little to refuse.
pub fn parse_cost(body: &[u8], limit: usize) -> Result<usize, CostError> {
    let total = Cell::new(0usize);
    let counter = Counter {
        total: &total,
        limit,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let counted = counter.deserialize(&mut de).and_then(|()| de.end());
    match counted {
        Ok(()) => Ok(total.get()),
        Err(_) if total.get() > limit => Err(CostError::OverLimit { limit }),
        Err(error) => Err(CostError::Json {
            error,
            counted: total.get(),
        }),
    }
}

#[derive(Clone, Copy)]
struct Counter<'a> {
    total: &'a Cell<usize>,
    limit: usize,
}

impl Counter<'_> {
    fn add<E: de::Error>(self, bytes: usize) -> Result<(), E> {
        let total = self.total.get().saturating_add(bytes);
        self.total.set(total);
        if total > self.limit {
            return Err(E::custom("over the memory limit"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.add(PER_VALUE)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.add(PER_VALUE + PER_STRING + s.len())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.add(PER_VALUE)?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.add(PER_VALUE)?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
