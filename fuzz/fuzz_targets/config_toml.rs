//! `Config::parse` on arbitrary TOML: it must return errors, never panic or
//! hang, and every error must name a position inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluicegate::config::{Config, Format};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check(text, Format::Toml);
    }
});

fn check(text: &str, format: Format) {
    if let Err(errors) = Config::parse(text, "fuzz.toml", format) {
        assert!(!errors.0.is_empty(), "an Err with no errors");
        // YAML also ends a line at a lone CR.
        let lone_cr = text.matches('\r').count() - text.matches("\r\n").count();
        let lines = text.lines().count() + lone_cr + 2;
        for error in &errors.0 {
            assert!(
                error.line >= 1 && error.line <= lines,
                "{error} is outside the input"
            );
        }
    }
}
