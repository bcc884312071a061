//! Reloading a large TOML file without parsing all of it again: the file is
//! cut before every `[[routes]]` header, and a route table whose text is
//! the same as at the last load is taken from the memo instead of parsed.
//!
//! The cut is only used where it cannot change what the file means: a
//! `[[routes]]` header on a line of its own starts a new element of
//! `routes`, and the statements up to the next one belong to that element,
//! unless a multi-line string could hide such a line (then the file is
//! parsed whole). Each piece must parse on its own as exactly what it
//! would be in the whole file: the part before the first route without any
//! `routes` key, each route piece one route table and nothing else (a
//! top-level table after the routes fails that, and so does anything
//! unknown). Whenever a piece does not parse, the whole file is parsed the
//! usual way, which gives the located error. A route table seen before is
//! taken as the route it validated to (not parsed, not validated again:
//! a route's checks depend on its own text alone, except for TLS settings,
//! so routes with those are never kept); every other part is validated as
//! usual, and the checks across routes (duplicate names) run on all.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use super::RouteConfig;
use super::file::{FileConfig, FileRoute};
use super::validate::RawRoute;

/// The route tables of the last load, in file order: each one's text and,
/// when it can be reused as it is, the route it validated to.
#[derive(Debug, Default)]
pub struct ParseMemo {
    last: Vec<(Box<str>, Option<Arc<RouteConfig>>)>,
}

/// One `[[routes]]` piece of the file, parsed on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutePiece {
    routes: Vec<FileRoute>,
}

/// A file cut into pieces: the part before the routes, each route, and
/// where in the memo an unchanged one was found.
pub(super) struct Pieces<'s> {
    pub header: FileConfig,
    pub routes: Vec<RawRoute>,
    texts: Vec<&'s str>,
    found: Vec<Option<usize>>,
}

impl ParseMemo {
    /// TOML `src` cut into its pieces, each route taken from the memo when
    /// its text is the same as at the last load and parsed otherwise;
    /// `None` when `src` cannot be cut safely or a piece does not parse
    /// (then parse it whole).
    pub(super) fn cut<'s>(&self, src: &'s str) -> Option<Pieces<'s>> {
        let (head, texts) = split(src)?;
        let table: toml::Table = toml::from_str(head).ok()?;
        if table.contains_key("routes") {
            return None;
        }
        let header: FileConfig = table.try_into().ok()?;
        // Mostly the same routes in the same order: compare in place. With
        // as many routes as before, one that differs was edited where it
        // is; otherwise look it up by its text.
        let same_count = self.last.len() == texts.len();
        let mut by_text: Option<HashMap<&str, usize>> = None;
        let mut routes = Vec::with_capacity(texts.len());
        let mut found = Vec::with_capacity(texts.len());
        for (i, &text) in texts.iter().enumerate() {
            let at = match self.last.get(i) {
                Some((last, _)) if **last == *text => Some(i),
                _ if same_count => None,
                _ => by_text
                    .get_or_insert_with(|| {
                        let known = self.last.iter().enumerate();
                        known.map(|(j, (t, _))| (&**t, j)).collect()
                    })
                    .get(text)
                    .copied(),
            };
            let checked = at
                .and_then(|j| self.last.get(j))
                .and_then(|(_, r)| r.clone());
            match checked {
                Some(route) => routes.push(RawRoute::Checked(route)),
                None => {
                    let mut one: RoutePiece = toml::from_str(text).ok()?;
                    let route = one.routes.pop().filter(|_| one.routes.is_empty())?;
                    routes.push(RawRoute::File(Box::new(route)));
                }
            }
            found.push(at);
        }
        Some(Pieces {
            header,
            routes,
            texts,
            found,
        })
    }

    /// Remembers `routes` as what TOML `src` validated to (the running
    /// config and the bytes it was loaded from), without parsing: the
    /// first reload then reuses the running routes themselves.
    pub fn seed(&mut self, src: &str, routes: &[Arc<RouteConfig>]) {
        let Some((_, texts)) = split(src) else {
            return;
        };
        if texts.len() != routes.len() {
            return;
        }
        self.last = texts
            .into_iter()
            .zip(routes)
            .map(|(text, route)| (Box::from(text), reusable(route).then(|| Arc::clone(route))))
            .collect();
    }

    /// Keeps the routes `pieces` validated to (`routes`, in the same
    /// order) for the next load. A route with TLS settings is not kept: its
    /// settings hold positions in the file and paths resolved against its
    /// folder, so it is checked again every time.
    pub(super) fn remember(&mut self, pieces: Pieces<'_>, routes: &[Arc<RouteConfig>]) {
        let mut last = std::mem::take(&mut self.last);
        self.last = pieces
            .texts
            .iter()
            .zip(pieces.found)
            .zip(routes)
            .map(|((&text, found), route)| {
                let kept = found
                    .and_then(|j| last.get_mut(j))
                    .map(|(t, _)| std::mem::take(t));
                let text = kept
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| Box::from(text));
                (text, reusable(route).then(|| Arc::clone(route)))
            })
            .collect();
    }
}

/// Whether `route` can be taken as it is for the same text: not when it has
/// TLS settings (positions in the file, paths resolved against its folder).
fn reusable(route: &RouteConfig) -> bool {
    route.backends.iter().all(|b| b.transport.tls.is_none())
}

/// `src` cut before each `[[routes]]` header: the part before the first
/// and each route's text; `None` when it has no routes or could hide a
/// header line in a multi-line string.
fn split(src: &str) -> Option<(&str, Vec<&str>)> {
    if src.contains("\"\"\"") || src.contains("'''") {
        return None;
    }
    let starts = route_starts(src);
    let &first = starts.first()?;
    let ends = starts.iter().skip(1).copied().chain([src.len()]);
    let texts = starts
        .iter()
        .zip(ends)
        .map(|(&start, end)| src.get(start..end))
        .collect::<Option<_>>()?;
    Some((src.get(..first)?, texts))
}

/// Byte offsets of the lines that are a `[[routes]]` header (spaces before,
/// a comment after allowed).
fn route_starts(src: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    for line in src.split_inclusive('\n') {
        let rest = line
            .trim_start_matches([' ', '\t'])
            .strip_prefix("[[routes]]")
            .map(|rest| rest.trim_start_matches([' ', '\t']));
        if rest.is_some_and(|r| r.is_empty() || r.starts_with(['#', '\n', '\r'])) {
            starts.push(at);
        }
        at += line.len();
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Format};

    const FILE: &str = r#"
[[listeners]]
addr = "127.0.0.1:0"

[[routes]]
name = "a"
match = { host = "a.test" }
  [[routes.backends]]
  name = "blue"
  endpoints = ["127.0.0.1:1"]

  [[routes]]   # indented, with a comment
name = "b"
backends = [{ name = "blue", endpoints = ["127.0.0.1:2"] }]
"#;

    fn load(path: &std::path::Path, text: &str, memo: &mut ParseMemo) -> Config {
        std::fs::write(path, text).unwrap();
        Config::load_with(path, memo).unwrap()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sluicegate-memo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn an_unchanged_route_is_reused_and_a_changed_one_parsed() {
        let path = temp("reuse.toml");
        let mut memo = ParseMemo::default();
        let first = load(&path, FILE, &mut memo);
        let whole = Config::parse(FILE, "x.toml", Format::Toml).unwrap();
        assert_eq!(
            first.routes, whole.routes,
            "pieces give what the whole file gives"
        );
        assert_eq!(
            format!("{:?}", first.listeners),
            format!("{:?}", whole.listeners)
        );

        let changed = FILE.replace("127.0.0.1:2", "127.0.0.1:3");
        let second = load(&path, &changed, &mut memo);
        assert!(
            Arc::ptr_eq(&first.routes[0], &second.routes[0]),
            "a is reused"
        );
        assert_eq!(
            second.routes[1].backends[0].endpoints[0].to_string(),
            "127.0.0.1:3"
        );
        assert_eq!(
            second.routes,
            Config::parse(&changed, "x.toml", Format::Toml)
                .unwrap()
                .routes
        );

        // A route added in front: the others are found by their text.
        let (head, rest) = changed.split_at(changed.find("[[routes]]").unwrap());
        let c = "[[routes]]\nname = \"c\"\nbackends = [{ name = \"x\", endpoints = [\"127.0.0.1:4\"] }]\n";
        let third = load(&path, &format!("{head}{c}{rest}"), &mut memo);
        assert_eq!(third.routes[0].name, "c");
        assert!(Arc::ptr_eq(&third.routes[1], &second.routes[0]));
        assert!(Arc::ptr_eq(&third.routes[2], &second.routes[1]));
        // Two swapped (as many routes as before): parsed again, same result.
        let b_at = rest.find("  [[routes]]").unwrap();
        let swapped = format!("{head}{}\n{}", &rest[b_at..], &rest[..b_at]);
        let fourth = load(&path, &swapped, &mut memo);
        assert_eq!(
            fourth.routes,
            Config::parse(&swapped, "x.toml", Format::Toml)
                .unwrap()
                .routes
        );
        assert_eq!(fourth.routes[0].name, "b");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn files_it_cannot_cut_safely_are_left_to_the_whole_parse() {
        let memo = ParseMemo::default();
        let after_routes = format!("{FILE}\n[admin]\naddr = \"127.0.0.1:0\"\n");
        assert!(
            memo.cut(&after_routes).is_none(),
            "a table after the routes"
        );
        let multiline = FILE.replace("name = \"b\"", "name = \"\"\"b\"\"\"");
        assert!(memo.cut(&multiline).is_none(), "a multi-line string");
        let routes_key = format!("routes = []\n{FILE}");
        assert!(memo.cut(&routes_key).is_none(), "routes before [[routes]]");
        let unknown = FILE.replace("name = \"b\"", "name = \"b\"\nnope = 1");
        assert!(memo.cut(&unknown).is_none(), "an unknown key");
        let two = FILE.replace("  [[routes]]   # indented, with a comment", "[[ routes ]]");
        assert!(
            memo.cut(&two).is_none(),
            "a header it does not cut at: two routes in a piece"
        );
        assert!(
            memo.cut("[[listeners]]\naddr = \"127.0.0.1:0\"\n")
                .is_none()
        );
        // Each of these still loads (or fails) as the whole file does.
        let path = temp("uncut.toml");
        let mut memo = ParseMemo::default();
        for text in [&after_routes, &multiline, &two] {
            std::fs::write(&path, text).unwrap();
            let pieced = Config::load_with(&path, &mut memo).map(|c| c.routes);
            let whole = Config::load(&path).map(|c| c.routes);
            assert_eq!(format!("{pieced:?}"), format!("{whole:?}"));
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_file_with_every_top_level_section_loads_as_the_whole_parse_does() {
        let sections = r#"
[admin]
addr = "127.0.0.1:0"
[timeouts]
connect = "2s"
client_idle = "30s"
[limits]
max_request_headers = 50
[[notify]]
url = "http://127.0.0.1:9/hook"
events = ["revision"]
"#;
        let text = FILE.replacen("\n[[routes]]", &format!("{sections}\n[[routes]]"), 1);
        let path = temp("sections.toml");
        let mut memo = ParseMemo::default();
        let pieced = load(&path, &text, &mut memo);
        let whole = Config::load(&path).unwrap();
        assert_eq!(format!("{pieced:?}"), format!("{whole:?}"));
        assert_eq!(pieced.notify.len(), 1, "the sections were read");
        assert_eq!(memo.last.len(), 2, "loaded through the pieces, not whole");
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn errors_through_the_memo_are_the_whole_parse_errors() {
        let path = temp("errors.toml");
        let mut memo = ParseMemo::default();
        load(&path, FILE, &mut memo);
        for bad in [
            FILE.replace("name = \"b\"", "name = \"a\""),
            FILE.replace("name = \"b\"", "name = \"b"),
            FILE.replace("127.0.0.1:2", "nope:x"),
        ] {
            std::fs::write(&path, &bad).unwrap();
            let pieced = Config::load_with(&path, &mut memo).unwrap_err();
            let whole = Config::load(&path).unwrap_err();
            assert_eq!(pieced.to_string(), whole.to_string());
        }
        std::fs::write(&path, FILE.replace("name = \"b\"", "name = \"a\"")).unwrap();
        let errors = Config::load_with(&path, &mut memo).unwrap_err();
        assert!(
            errors.to_string().contains("duplicate route name `a`"),
            "{errors}"
        );
        assert_eq!(errors.0[0].line, 13, "{errors}");
        let _ = std::fs::remove_file(&path);
    }
}
