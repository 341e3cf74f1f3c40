//! Text from the controller shown in a terminal.

use std::borrow::Cow;

/// `text` with every character that a terminal would act on escaped as `\u{..}`: C0
/// controls but the line feed, DEL, C1 controls (`\u{9b}` starts an escape sequence on
/// many terminals) and the bidirectional overrides that reorder what is shown. Names,
/// messages and reasons come from the API and from engine reports, so they are only
/// ever printed through this.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert!(matches!(
            terminal_safe("web-pool: 2 servers\nok"),
            Cow::Borrowed(_)
        ));
        assert_eq!(terminal_safe("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(
            terminal_safe("\u{9b}31m\u{7f}\r\t"),
            "\\u{9b}31m\\u{7f}\\u{d}\\u{9}"
        );
        assert_eq!(terminal_safe("abc\u{202e}def"), "abc\\u{202e}def");
        assert_eq!(terminal_safe("été"), "été");
    }
}
