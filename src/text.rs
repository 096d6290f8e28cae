//! Bounded text for messages that quote input: whatever a hostile object holds, what we
//! build from it and send back stays small.

use std::fmt::{self, Write};

/// At most `max` bytes of `s` (cut on a character boundary, `…` appended): messages that
/// echo input must stay small whatever the input was.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// At most `max` characters of `s`, with `…` when cut.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// Formats `value` but stops after `max` characters: schema errors quote the offending
/// value, which for a hostile object can be megabytes we must not even build.
pub fn bounded_display(value: &dyn fmt::Display, max: usize) -> String {
    struct Bounded {
        out: String,
        left: usize,
        cut: bool,
    }
    impl fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for c in s.chars() {
                if self.left == 0 {
                    self.cut = true;
                    return Err(fmt::Error);
                }
                self.out.push(c);
                self.left -= 1;
            }
            Ok(())
        }
    }
    let mut w = Bounded {
        out: String::new(),
        left: max,
        cut: false,
    };
    let _ = write!(w, "{value}");
    if w.cut {
        w.out.push('…');
    }
    w.out
}

/// Keys kubectl-style paths write as `.key`; anything else is written `[key]`.
pub fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests;
