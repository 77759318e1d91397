//! An event's `ts`: its RFC 3339 text, held in the event itself. Every line
//! has one, and a heap string each was an allocation and a free per line
//! (perf, an RST storm).

use std::fmt;

/// The longest text held inline: RFC 3339 with nanoseconds is 30 bytes for
/// years 0 to 9999. Longer text (far-off years, any text a test gives)
/// goes on the heap.
const INLINE: usize = 38;

/// Text, almost always `2026-11-25T20:31:02.123456789Z`.
#[derive(Clone)]
pub struct Timestamp(Repr);

#[derive(Clone)]
enum Repr {
    /// Only ever filled from whole `&str`s and ASCII digits, so always
    /// UTF-8 (checked again when read: no unsafe).
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(Box<str>),
}

impl Timestamp {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The text's bytes, UTF-8, without checking them again (for the JSON
    /// line, where the check cost as much as the rest of the timestamp).
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// `head` followed by `tail` (ASCII), inline when it fits.
    pub(crate) fn joined(head: &str, tail: &[u8]) -> Timestamp {
        let len = head.len() + tail.len();
        if len > INLINE || !tail.is_ascii() {
            let mut s = String::with_capacity(len);
            s.push_str(head);
            s.push_str(&String::from_utf8_lossy(tail));
            return Timestamp(Repr::Heap(s.into_boxed_str()));
        }
        let mut bytes = [0u8; INLINE];
        bytes[..head.len()].copy_from_slice(head.as_bytes());
        bytes[head.len()..len].copy_from_slice(tail);
        Timestamp(Repr::Inline {
            len: len as u8,
            bytes,
        })
    }
}

impl Default for Timestamp {
    fn default() -> Self {
        Timestamp::joined("", b"")
    }
}

impl std::ops::Deref for Timestamp {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Timestamp {
    fn from(s: &str) -> Self {
        Timestamp::joined(s, b"")
    }
}

impl From<String> for Timestamp {
    fn from(s: String) -> Self {
        Timestamp::joined(&s, b"")
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Timestamp {}

impl PartialEq<str> for Timestamp {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Timestamp {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_any_text_inline_or_not() {
        for s in [
            "",
            "t",
            "2026-11-25T20:31:02.123456789Z",
            "+292277026-11-25T20:31:02.123456789Z",
            "caf\u{e9} \u{1f980}",
            &"x".repeat(INLINE),
            &"x".repeat(INLINE + 1),
            &"\u{e9}".repeat(INLINE),
        ] {
            let t = Timestamp::from(s);
            assert_eq!(t.as_str(), s);
            assert_eq!(t.as_bytes(), s.as_bytes());
            assert_eq!(Timestamp::from(s.to_string()), t);
            assert_eq!(format!("{t}"), s);
            assert_eq!(format!("{t:?}"), format!("{s:?}"));
            assert_eq!(
                serde_json::to_string(&t).expect("test data"),
                serde_json::to_string(s).expect("test data")
            );
        }
        assert!(matches!(
            Timestamp::from("2026-11-25T20:31:02.123456789Z").0,
            Repr::Inline { .. }
        ));
        assert!(matches!(
            Timestamp::from("x".repeat(INLINE + 1).as_str()).0,
            Repr::Heap(_)
        ));
    }

    #[test]
    fn joins_a_head_and_a_tail() {
        assert_eq!(
            Timestamp::joined("2026-11-25T20:31:02.", b"123456789Z"),
            "2026-11-25T20:31:02.123456789Z"
        );
        let long = "y".repeat(INLINE);
        assert_eq!(Timestamp::joined(&long, b"Z").as_str(), format!("{long}Z"));
        assert_eq!(Timestamp::joined("a", b"\xff").as_str(), "a\u{fffd}");
    }
}
