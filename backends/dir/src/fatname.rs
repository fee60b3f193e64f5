//! Reversible mapping of names onto FAT/exFAT, as Samba (`vfs_catia`/`mangled names` off) and
//! Cygwin do: every byte FAT cannot store in a name is written as the private-use character
//! U+F000 + byte, and mapped back when the name is read.
//!
//! Mapped: the characters FAT forbids (`" * : < > ? \ |`), control characters 0x01–0x1f, a
//! trailing `.` or space (Windows and the vfat driver strip them), and every byte that is not part
//! of valid UTF-8 (so a non-UTF-8 name like `bad\xffname` survives). A name that already contains
//! a character of U+F000–U+F0FF is refused on write, which keeps the mapping a bijection.

/// First code point of the private-use block used for mapped bytes.
const BASE: u32 = 0xF000;

/// Why a name cannot be written to a FAT medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The name already contains a character of U+F000–U+F0FF, which this mapping reserves.
    PrivateUse(char),
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncodeError::PrivateUse(c) => write!(
                f,
                "the name contains the private-use character U+{:04X}, which briefcase uses on FAT to \
                 store characters FAT forbids; rename it",
                *c as u32
            ),
        }
    }
}

/// Whether FAT forbids `b` anywhere in a name (besides `/` and NUL, which never reach here).
fn forbidden(b: u8) -> bool {
    b < 0x20 || matches!(b, b'"' | b'*' | b':' | b'<' | b'>' | b'?' | b'\\' | b'|')
}

/// Bytes that [`encode`] may produce as U+F000 + byte, and that [`decode`] therefore maps back.
fn decodable(b: u8) -> bool {
    (b != 0 && forbidden(b)) || b == b'.' || b == b' ' || b >= 0x80
}

fn push_mapped(out: &mut Vec<u8>, b: u8) {
    let c = char::from_u32(BASE + u32::from(b)).unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut buf = [0; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Maps one name component (no `/`) to what is stored on FAT.
///
/// # Errors
/// [`EncodeError::PrivateUse`] when the name already uses the reserved block.
pub fn encode(name: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(name.len() + 8);
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if (BASE..=BASE + 0xff).contains(&(c as u32)) {
                return Err(EncodeError::PrivateUse(c));
            }
            if c.is_ascii() && forbidden(c as u8) {
                push_mapped(&mut out, c as u8);
            } else {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
        for b in chunk.invalid() {
            push_mapped(&mut out, *b);
        }
    }
    if let Some(last @ (b'.' | b' ')) = out.last().copied() {
        out.pop();
        push_mapped(&mut out, last);
    }
    Ok(out)
}

/// Maps a name read from FAT back to the original bytes (the inverse of [`encode`]). Names
/// written by others pass through unchanged unless they use the reserved block.
pub fn decode(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.len());
    for chunk in stored.utf8_chunks() {
        for c in chunk.valid().chars() {
            let cp = c as u32;
            match cp.checked_sub(BASE).and_then(|d| u8::try_from(d).ok()) {
                Some(b) if decodable(b) => out.push(b),
                _ => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

/// Case folding used to find names FAT would treat as the same.
pub fn fold(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_lowercase()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    macro_rules! mapping {
        ($($name:expr => $stored:expr),* $(,)?) => {$(
            let stored = encode($name).unwrap();
            assert_eq!(String::from_utf8_lossy(&stored), $stored, "encode {:?}", $name);
            assert_eq!(decode(&stored), $name.to_vec(), "decode {:?}", $stored);
        )*};
    }

    #[test]
    fn mapping_table() {
        mapping! {
            b"plain.txt" => "plain.txt",
            b"a:b" => "a\u{F03A}b",
            b"what?*<>|\"\\" => "what\u{F03F}\u{F02A}\u{F03C}\u{F03E}\u{F07C}\u{F022}\u{F05C}",
            b"tab\there" => "tab\u{F009}here",
            b"trailing." => "trailing\u{F02E}",
            b"trailing " => "trailing\u{F020}",
            b"..." => "..\u{F02E}",
            b"mid.dle name" => "mid.dle name",
            "ünï 😀".as_bytes() => "ünï 😀",
            b"bad\xffname" => "bad\u{F0FF}name",
            b"\xc3" => "\u{F0C3}",
        }
    }

    #[test]
    fn private_use_is_refused() {
        assert!(matches!(
            encode("x\u{F03A}".as_bytes()),
            Err(EncodeError::PrivateUse('\u{F03A}'))
        ));
        assert!(
            encode("x\u{F100}".as_bytes()).is_ok(),
            "outside the reserved block"
        );
    }

    #[test]
    fn foreign_names_pass_through() {
        assert_eq!(
            decode("\u{F000}\u{F02F}plain".as_bytes()),
            "\u{F000}\u{F02F}plain".as_bytes()
        );
    }

    #[test]
    fn every_byte_round_trips() {
        for b in 1..=255u8 {
            if b == b'/' {
                continue;
            }
            let name = [b'x', b, b'y', b];
            assert_eq!(decode(&encode(&name).unwrap()), name, "byte {b:#x}");
            let stored = encode(&name).unwrap();
            assert!(
                std::str::from_utf8(&stored).is_ok(),
                "stored name is UTF-8 for {b:#x}"
            );
            assert!(
                !stored.iter().any(|c| forbidden(*c)),
                "stored name has a forbidden byte for {b:#x}"
            );
        }
    }
}
