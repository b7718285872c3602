//! Arbitrary bytes as a config file → the parser and semantic validator that
//! `switchyard check` runs (`config::load_text`, what `config::load` calls after reading the
//! file).
//!
//! Checks, besides "never panics" (which includes the debug assertion in `config::parse_in`
//! that the positioned tree pass and serde_yaml read the same config):
//! - every error names the file it was given;
//! - every error has a position (line ≥ 1, column ≥ 1) that lies within the input: the line
//!   exists (counting `\n`, `\r\n` and a lone `\r` as line breaks, as YAML does) and the
//!   column is at most one past that line's last character;
//! - no message contains a control character (each error is printed on one line; a raw
//!   newline, escape or NUL from the file would break that or the terminal);
//! - the printed report has exactly one line per error.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use switchyard::config;

/// The file name used in messages. Its directory does not exist, so relative certificate
/// paths in the input resolve to nothing.
const FILE: &str = "/nonexistent-switchyard-fuzz/fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let errors = match config::load_text(Path::new(FILE), &text) {
        Ok(loaded) => {
            // A config that loads also summarises.
            let _ = config::summary(&loaded.config);
            return;
        }
        Err(errors) => errors,
    };
    assert!(!errors.0.is_empty(), "Err with no errors");
    // What the tree parser sees: a leading byte order mark is dropped first.
    let seen = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let lines = config::yaml_lines(seen);
    for e in &errors.0 {
        assert_eq!(e.file, FILE);
        assert!(
            e.line >= 1 && e.column >= 1,
            "error without a position: {e:?}"
        );
        assert!(
            e.line <= lines.len(),
            "line {} past the end ({} lines): {e:?}",
            e.line,
            lines.len()
        );
        let width = lines[e.line - 1].chars().count();
        assert!(
            e.column <= width + 1,
            "column {} past the end of line {} ({width} chars): {e:?}",
            e.column,
            e.line
        );
        assert!(
            !e.message.chars().any(char::is_control),
            "control character in the message: {e:?}"
        );
    }
    assert_eq!(errors.to_string().lines().count(), errors.0.len());
});
