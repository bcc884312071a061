//! Config errors name the file, line, column and field; all of them are
//! reported at once; `sluicegate check` prints them and exits 1.
//!
//! Files are built line by line so the expected positions can be read off the
//! source: line N is `lines[N - 1]`, columns count from 1.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use sluicegate::config::{Config, ConfigError, Format, Weight};

/// A valid file; tests replace or append lines to break it in one place.
const BASE: [&str; 15] = [
    "[[listeners]]",                      // 1
    "addr = \"127.0.0.1:8080\"",          // 2
    "",                                   // 3
    "[[routes]]",                         // 4
    "name = \"web\"",                     // 5
    "",                                   // 6
    "  [[routes.backends]]",              // 7
    "  name = \"blue\"",                  // 8
    "  weight = 90",                      // 9
    "  endpoints = [\"127.0.0.1:8081\"]", // 10
    "",                                   // 11
    "  [[routes.backends]]",              // 12
    "  name = \"green\"",                 // 13
    "  weight = 10",                      // 14
    "  endpoints = [\"127.0.0.1:8082\"]", // 15
];

/// BASE with `(line, text)` replacements, then `appended` lines from line 16 on.
fn toml_with(replace: &[(usize, &str)], appended: &[&str]) -> String {
    let mut lines: Vec<&str> = BASE.to_vec();
    for &(line, text) in replace {
        lines[line - 1] = text;
    }
    lines.extend_from_slice(appended);
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn errors_of(src: &str, format: Format) -> Vec<ConfigError> {
    match Config::parse(src, "test.toml", format) {
        Ok(_) => panic!("config should be invalid:\n{src}"),
        Err(errors) => errors.0,
    }
}

/// Exactly one error, at `line`:`column`, whose message starts with `field`
/// and mentions each of `mentions`.
fn assert_one_error(
    src: &str,
    format: Format,
    line: usize,
    column: usize,
    field: &str,
    mentions: &[&str],
) {
    let errors = errors_of(src, format);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    assert_error(&errors[0], line, column, field, mentions);
}

fn assert_error(error: &ConfigError, line: usize, column: usize, field: &str, mentions: &[&str]) {
    assert_eq!(error.file, "test.toml");
    assert_eq!(
        (error.line, error.column),
        (line, column),
        "position of {:?}",
        error.message
    );
    assert!(
        error.message.starts_with(field),
        "message should start with the field path {field:?}: {:?}",
        error.message
    );
    for word in mentions {
        assert!(
            error.message.contains(word),
            "message should mention {word:?}: {:?}",
            error.message
        );
    }
}

#[test]
fn base_config_is_valid() {
    let config = Config::parse(&toml_with(&[], &[]), "test.toml", Format::Toml)
        .unwrap_or_else(|e| panic!("{e}"));
    let route = config.route("web").expect("route web");
    let weights: Vec<Weight> = route.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [Weight(9000), Weight(1000)]);
}

#[test]
fn unknown_key_is_reported_at_the_key() {
    let src = toml_with(&[(9, "  wieght = 90")], &[]);
    assert_one_error(
        &src,
        Format::Toml,
        9,
        3,
        "routes[0].backends[0]",
        &["wieght"],
    );
}

#[test]
fn weights_not_summing_to_100_point_at_the_weight_value() {
    let src = toml_with(&[(9, "  weight = 95")], &[]);
    assert_one_error(
        &src,
        Format::Toml,
        9,
        12,
        "routes[0].backends[0].weight",
        &["105", "100"],
    );
}

#[test]
fn duplicate_backend_name_points_at_the_second_name() {
    let src = toml_with(&[(13, "  name = \"blue\"")], &[]);
    assert_one_error(
        &src,
        Format::Toml,
        13,
        10,
        "routes[0].backends[1].name",
        &["blue"],
    );
}

#[test]
fn mirror_naming_an_unknown_backend_is_an_error() {
    let src = toml_with(
        &[],
        &[
            "",                       // 16
            "  [routes.mirror]",      // 17
            "  backend = \"purple\"", // 18
            "  percent = 5",          // 19
        ],
    );
    assert_one_error(
        &src,
        Format::Toml,
        18,
        13,
        "routes[0].mirror.backend",
        &["purple"],
    );
}

#[test]
fn bad_duration_points_at_the_value() {
    let src = toml_with(
        &[],
        &[
            "",                 // 16
            "[timeouts]",       // 17
            "connect = \"2x\"", // 18
        ],
    );
    assert_one_error(&src, Format::Toml, 18, 11, "timeouts.connect", &["2x"]);
}

#[test]
fn bad_listener_address_points_at_the_value() {
    let src = toml_with(&[(2, "addr = \"127.0.0.1\"")], &[]);
    assert_one_error(
        &src,
        Format::Toml,
        2,
        8,
        "listeners[0].addr",
        &["127.0.0.1"],
    );
}

#[test]
fn bad_endpoint_points_at_the_array_element() {
    let src = toml_with(
        &[(10, "  endpoints = [\"127.0.0.1:8081\", \"nohost\"]")],
        &[],
    );
    assert_one_error(
        &src,
        Format::Toml,
        10,
        34,
        "routes[0].backends[0].endpoints[1]",
        &["nohost"],
    );
}

#[test]
fn canary_steps_must_end_at_100() {
    let src = toml_with(
        &[],
        &[
            "",                      // 16
            "  [routes.canary]",     // 17
            "  baseline = \"blue\"", // 18
            "  canary = \"green\"",  // 19
            "  steps = [1, 5, 50]",  // 20
        ],
    );
    assert_one_error(
        &src,
        Format::Toml,
        20,
        11,
        "routes[0].canary.steps",
        &["100"],
    );
}

#[test]
fn canary_approve_at_must_name_one_of_the_steps() {
    let src = toml_with(
        &[],
        &[
            "",                        // 16
            "  [routes.canary]",       // 17
            "  baseline = \"blue\"",   // 18
            "  canary = \"green\"",    // 19
            "  steps = [10, 50, 100]", // 20
            "  approve_at = [10, 25]", // 21
        ],
    );
    assert_one_error(
        &src,
        Format::Toml,
        21,
        21,
        "routes[0].canary.approve_at[1]",
        &["25", "not one of the steps", "10, 50, 100"],
    );
}

#[test]
fn canary_gate_urls_are_http() {
    let src = toml_with(
        &[],
        &[
            "",                                  // 16
            "  [routes.canary]",                 // 17
            "  baseline = \"blue\"",             // 18
            "  canary = \"green\"",              // 19
            "  steps = [50, 100]",               // 20
            "  [[routes.canary.gates]]",         // 21
            "  url = \"ftp://127.0.0.1:7000/\"", // 22
        ],
    );
    assert_one_error(
        &src,
        Format::Toml,
        22,
        9,
        "routes[0].canary.gates[0].url",
        &["http://"],
    );
}

#[test]
fn notify_events_are_revision_or_canary() {
    let src = toml_with(
        &[],
        &[
            "",                                     // 16
            "[[notify]]",                           // 17
            "url = \"http://127.0.0.1:7001/hook\"", // 18
            "events = [\"canary\", \"deploys\"]",   // 19
        ],
    );
    assert_one_error(
        &src,
        Format::Toml,
        19,
        21,
        "notify[0].events[1]",
        &["unknown event `deploys`", "revision, canary"],
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let src = toml_with(
        &[(9, "  weight = 95")],
        &[
            "",                 // 16
            "[timeouts]",       // 17
            "connect = \"2x\"", // 18
        ],
    );
    let errors = errors_of(&src, Format::Toml);

    assert_eq!(errors.len(), 2, "{errors:#?}");
    let weight = errors
        .iter()
        .find(|e| e.message.starts_with("routes[0]"))
        .expect("the weight error");
    let duration = errors
        .iter()
        .find(|e| e.message.starts_with("timeouts"))
        .expect("the duration error");
    assert_error(weight, 9, 12, "routes[0].backends[0].weight", &["100"]);
    assert_error(duration, 18, 11, "timeouts.connect", &["2x"]);

    let shown = sluicegate::config::ConfigErrors(errors).to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("test.toml:9:12: routes[0].backends[0].weight")),
        "{shown}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("test.toml:18:11: timeouts.connect")),
        "{shown}"
    );
}

/// The same shape as BASE, in YAML, with blue at 95.
const BAD_YAML: [&str; 11] = [
    "listeners:",                              // 1
    "  - addr: \"127.0.0.1:8080\"",            // 2
    "routes:",                                 // 3
    "  - name: web",                           // 4
    "    backends:",                           // 5
    "      - name: blue",                      // 6
    "        weight: 95",                      // 7
    "        endpoints: [\"127.0.0.1:8081\"]", // 8
    "      - name: green",                     // 9
    "        weight: 10",                      // 10
    "        endpoints: [\"127.0.0.1:8082\"]", // 11
];

#[test]
fn yaml_weight_error_points_at_the_value() {
    let src = BAD_YAML.join("\n") + "\n";
    assert_one_error(
        &src,
        Format::Yaml,
        7,
        17,
        "routes[0].backends[0].weight",
        &["105", "100"],
    );
}

#[test]
fn yaml_with_valid_weights_parses() {
    let src = BAD_YAML.join("\n").replace("weight: 95", "weight: 90") + "\n";
    let config = Config::parse(&src, "test.yaml", Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.routes[0].backends[0].weight, Weight(9000));
}

// --- the binary ---------------------------------------------------------------

/// A file under the temp dir, unique to this process and call, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(extension: &str, contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "sluicegate-test-{}-{n}.{extension}",
            std::process::id()
        ));
        std::fs::write(&path, contents).expect("write temp config");
        TempFile(path)
    }

    fn display(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `sluicegate check -c FILE`: (exit code, stdout + stderr).
fn check(file: &TempFile) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluicegate"))
        .args(["check", "-c"])
        .arg(&file.0)
        .output()
        .expect("run sluicegate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().expect("exit code"), text)
}

#[test]
fn check_prints_file_line_column_and_exits_1_on_a_bad_file() {
    let file = TempFile::new("toml", &toml_with(&[(9, "  weight = 95")], &[]));

    let (code, output) = check(&file);

    assert_eq!(code, 1, "{output}");
    let expected = format!("{}:9:12: routes[0].backends[0].weight", file.display());
    assert!(
        output.contains(&expected),
        "expected {expected:?} in:\n{output}"
    );
}

#[test]
fn check_prints_every_error() {
    let file = TempFile::new(
        "toml",
        &toml_with(
            &[(2, "addr = \"127.0.0.1\""), (13, "  name = \"blue\"")],
            &[],
        ),
    );

    let (code, output) = check(&file);

    assert_eq!(code, 1, "{output}");
    for place in [
        "2:8: listeners[0].addr",
        "13:10: routes[0].backends[1].name",
    ] {
        let expected = format!("{}:{place}", file.display());
        assert!(
            output.contains(&expected),
            "expected {expected:?} in:\n{output}"
        );
    }
}

#[test]
fn check_exits_0_on_a_valid_file() {
    let file = TempFile::new("toml", &toml_with(&[], &[]));

    let (code, output) = check(&file);

    assert_eq!(code, 0, "{output}");
}

#[test]
fn check_reads_yaml_by_extension() {
    let file = TempFile::new("yaml", &(BAD_YAML.join("\n") + "\n"));

    let (code, output) = check(&file);

    assert_eq!(code, 1, "{output}");
    let expected = format!("{}:7:17: routes[0].backends[0].weight", file.display());
    assert!(
        output.contains(&expected),
        "expected {expected:?} in:\n{output}"
    );
}

// --- unknown keys and durations -------------------------------------------------

#[test]
fn every_unknown_key_is_reported_with_a_suggestion() {
    let src = toml_with(
        &[(2, "adr = \"127.0.0.1:8080\""), (9, "  weigth = 90")],
        &["", "[timeouts]", "conect = \"2s\""],
    );
    let errors = errors_of(&src, Format::Toml);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_error(
        &errors[0],
        2,
        1,
        "listeners[0]",
        &["`adr`", "did you mean `addr`?"],
    );
    assert_error(
        &errors[1],
        9,
        3,
        "routes[0].backends[0]",
        &["`weigth`", "did you mean `weight`?"],
    );
    assert_error(
        &errors[2],
        18,
        1,
        "timeouts",
        &["`conect`", "did you mean `connect`?"],
    );
}

#[test]
fn an_unknown_key_far_from_any_lists_the_known_ones() {
    let src = toml_with(&[], &["", "[admin]", "colour = \"blue\""]);
    assert_one_error(
        &src,
        Format::Toml,
        18,
        1,
        "admin",
        &["`colour`", "`addr`", "`token_file`"],
    );
}

#[test]
fn yaml_unknown_keys_are_all_reported_at_the_key() {
    let src = BAD_YAML
        .join("\n")
        .replace("weight: 95", "weight: 90")
        .replace("- name: web", "- nme: web")
        .replace("weight: 10", "wieght: 10")
        + "\n";
    let errors = errors_of(&src, Format::Yaml);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_error(
        &errors[0],
        4,
        5,
        "routes[0]",
        &["`nme`", "did you mean `name`?"],
    );
    assert_error(
        &errors[1],
        10,
        9,
        "routes[0].backends[1]",
        &["`wieght`", "did you mean `weight`?"],
    );
}

#[test]
fn compound_durations_parse_and_a_missing_unit_says_what_to_write() {
    let ok = toml_with(&[], &["", "[timeouts]", "client_idle = \"1m30s\""]);
    let config = Config::parse(&ok, "test.toml", Format::Toml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.timeouts.client_idle,
        std::time::Duration::from_secs(90)
    );

    let bad = toml_with(&[], &["", "[timeouts]", "client_idle = \"1m30\""]);
    assert_one_error(
        &bad,
        Format::Toml,
        18,
        15,
        "timeouts.client_idle",
        &["lacks a unit", "write 1m30s"],
    );
}
