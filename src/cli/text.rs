//! Text from the source (VM names, target names, messages) as the terminal gets it.
//!
//! Names come from VMX files, vCenter and plans: they may hold terminal escape sequences, NUL or
//! be very long. Tables never use a `{:width$}` taken from data (a width over 65,535 panics in
//! `format!`): columns are padded by hand, at most [`MAX_COLUMN`] wide, and control characters
//! are shown escaped (`\u{1b}`), never sent raw.

use std::borrow::Cow;

/// Widest a table column is padded to; longer cells run over.
pub const MAX_COLUMN: usize = 64;

/// `s` with control characters (C0, DEL, C1) escaped.
pub fn safe(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect())
}

/// The width of a column holding `cells` (at least `min`, at most [`MAX_COLUMN`]).
pub fn column<'a>(cells: impl Iterator<Item = &'a str>, min: usize) -> usize {
    cells.map(|c| safe(c).chars().count()).max().unwrap_or(0).clamp(min, MAX_COLUMN.max(min))
}

/// `s`, made safe, padded with spaces to `width` characters.
pub fn cell(s: &str, width: usize) -> String {
    let s = safe(s);
    let pad = width.saturating_sub(s.chars().count());
    let mut out = String::with_capacity(s.len() + pad);
    out.push_str(&s);
    out.extend(std::iter::repeat_n(' ', pad));
    out
}

/// `e` with its VM name and error message made [`safe`] for a terminal.
pub fn safe_event(e: &vmigrate::core::executor::Event) -> vmigrate::core::executor::Event {
    use vmigrate::core::executor::Event;
    let name = |s: &String| safe(s).into_owned();
    match e {
        Event::Phase { vm, phase } => Event::Phase { vm: name(vm), phase: *phase },
        Event::Disk { vm, disk, volume, pass, progress } => Event::Disk {
            vm: name(vm),
            disk: *disk,
            volume: name(volume),
            pass: pass.clone(),
            progress: progress.clone(),
        },
        Event::VmDone { vm, phase, error, downtime_seconds } => Event::VmDone {
            vm: name(vm),
            phase: *phase,
            error: error.clone().map(|mut er| {
                er.message = safe(&er.message).into_owned();
                er
            }),
            downtime_seconds: *downtime_seconds,
        },
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_pads_without_data_widths() {
        assert_eq!(safe("db\u{1b}[31m\0x"), "db\\u{1b}[31m\\u{0}x");
        assert_eq!(cell("ab", 4), "ab  ");
        let long = "n".repeat(70_000);
        assert_eq!(column([long.as_str(), "x"].into_iter(), 2), MAX_COLUMN);
        assert_eq!(cell(&long, MAX_COLUMN).len(), 70_000);
    }
}
