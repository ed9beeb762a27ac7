//! Mutations of corpus files, as a fuzzer makes them, for the property tests that start from
//! the checked-in corpus (`tests/corpus/`).

use proptest::prelude::*;
use proptest::sample::Index;

/// One change to an input.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    Cut(Index, usize),
    Insert(Index, Vec<u8>),
    Repeat(Index, usize, usize),
    /// Replaces the digits at the place with an extreme number.
    Number(Index, &'static str),
}

/// Any one change, at any place of the input it is applied to.
pub fn any_mutation() -> impl Strategy<Value = Mutation> {
    let extremes = prop::sample::select(vec![
        "0",
        "-1",
        "4294967296",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "1e308",
        "1e309",
        "-0.0",
        "1.7976931348623157e308",
        "123456789012345678901234567890",
    ]);
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<Index>(), 1usize..64).prop_map(|(at, len)| Mutation::Cut(at, len)),
        (
            any::<Index>(),
            prop::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    prop::sample::select(b"{}[]\",:\\0123456789eE-+.nulltruefalse".to_vec()),
                ],
                1..16
            )
        )
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        (any::<Index>(), 1usize..32, 1usize..8)
            .prop_map(|(at, len, times)| Mutation::Repeat(at, len, times)),
        (any::<Index>(), extremes).prop_map(|(at, number)| Mutation::Number(at, number)),
    ]
}

/// `bytes` with the change made; a place past the end is the end.
pub fn apply(mut bytes: Vec<u8>, mutation: &Mutation) -> Vec<u8> {
    let at = |index: &Index, bytes: &Vec<u8>| index.index(bytes.len() + 1);
    match mutation {
        Mutation::FlipBit(index, bit) if !bytes.is_empty() => {
            let at = index.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        Mutation::FlipBit(..) => {}
        Mutation::Cut(index, len) => {
            let start = at(index, &bytes);
            let end = (start + len).min(bytes.len());
            bytes.drain(start..end);
        }
        Mutation::Insert(index, inserted) => {
            let start = at(index, &bytes);
            bytes.splice(start..start, inserted.iter().copied());
        }
        Mutation::Repeat(index, len, times) => {
            let start = at(index, &bytes);
            let end = (start + len).min(bytes.len());
            let chunk = bytes[start..end].repeat(*times);
            bytes.splice(end..end, chunk);
        }
        Mutation::Number(index, number) => {
            let start = at(index, &bytes);
            let digits = bytes[start..]
                .iter()
                .take_while(|byte| byte.is_ascii_digit())
                .count();
            bytes.splice(start..start + digits, number.bytes());
        }
    }
    bytes
}
