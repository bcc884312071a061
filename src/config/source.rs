//! Where a value stands in the file: maps a field path such as
//! `routes[0].backends[1].weight` to a line and column, for TOML and YAML.
//!
//! Validation works on plain raw types and names the field that is wrong by its
//! path; this module turns that path into `FILE:LINE:COL`. Keeping positions out
//! of the raw types keeps them simple and the same for both formats.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

/// The file formats sluicegate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    /// YAML when the name ends in `.yaml`/`.yml`, TOML otherwise (SPEC §1).
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("yaml") || ext.eq_ignore_ascii_case("yml") => {
                Format::Yaml
            }
            _ => Format::Toml,
        }
    }
}

/// A line and column, both 1-based, columns counted in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `src`.
    pub fn of_offset(src: &str, offset: usize) -> Position {
        let offset = offset.min(src.len());
        let before = src.get(..offset).unwrap_or(src);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Position { line, column }
    }
}

/// A parsed document that only remembers positions.
#[derive(Debug, Default)]
pub struct SourceMap<'a> {
    src: &'a str,
    root: Option<Located>,
}

#[derive(Debug)]
struct Located {
    pos: Place,
    node: Node,
}

/// TOML gives byte offsets (turned into lines only when asked, so building
/// the map stays linear); YAML gives lines and columns directly.
#[derive(Debug, Clone, Copy)]
enum Place {
    Offset(usize),
    LineColumn(Position),
}

#[derive(Debug)]
enum Node {
    /// Entries: the key, where the key stands, the value.
    Map(Vec<(String, Place, Located)>),
    Seq(Vec<Located>),
    Leaf,
}

impl<'a> SourceMap<'a> {
    /// Builds the map; a document that does not parse gives an empty map
    /// (its syntax error is reported by the deserializer already).
    pub fn parse(src: &'a str, format: Format) -> SourceMap<'a> {
        let root = match format {
            Format::Toml => toml::de::DeTable::parse(src).ok().map(|table| Located {
                pos: Place::Offset(0),
                node: toml_table(table.get_ref()),
            }),
            Format::Yaml => serde_saphyr::from_str::<serde_saphyr::Spanned<YamlNode>>(src)
                .ok()
                .map(yaml_located),
        };
        SourceMap { src, root }
    }

    /// The position of the deepest part of `path` that exists in the file
    /// (`routes[0].backends[1].weight`; a missing field points at its table).
    pub fn locate(&self, path: &str) -> Position {
        self.position(self.find(path).1)
    }

    /// The position of the last key of `path` itself (`weigth` in
    /// `routes[0].backends[0].weigth`), or of its value when the path ends in
    /// an index or does not exist.
    pub fn locate_key(&self, path: &str) -> Position {
        let (key, value) = self.find(path);
        self.position(key.unwrap_or(value))
    }

    /// Where the deepest existing part of `path` stands: its key (when the
    /// last step was a key) and its value.
    fn find(&self, path: &str) -> (Option<Place>, Place) {
        let Some(mut here) = self.root.as_ref() else {
            return (None, Place::LineColumn(Position { line: 1, column: 1 }));
        };
        let mut key_place = None;
        for seg in split_path(path) {
            let next = match (&here.node, seg) {
                (Node::Map(entries), Segment::Key(key)) => entries
                    .iter()
                    .find(|(k, _, _)| k == key)
                    .map(|(_, at, v)| (Some(*at), v)),
                (Node::Seq(items), Segment::Index(i)) => items.get(i).map(|v| (None, v)),
                _ => None,
            };
            match next {
                Some((at, next)) => {
                    key_place = at;
                    here = next;
                }
                None => {
                    key_place = None;
                    break;
                }
            }
        }
        (key_place, here.pos)
    }

    fn position(&self, place: Place) -> Position {
        match place {
            Place::Offset(offset) => Position::of_offset(self.src, offset),
            Place::LineColumn(pos) => pos,
        }
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let mut pieces = part.split('[');
        let key = pieces.next().filter(|k| !k.is_empty()).map(Segment::Key);
        let indexes = pieces
            .filter_map(|p| p.trim_end_matches(']').parse().ok())
            .map(Segment::Index);
        key.into_iter().chain(indexes).collect::<Vec<_>>()
    })
}

fn toml_table(table: &toml::de::DeTable<'_>) -> Node {
    Node::Map(
        table
            .iter()
            .map(|(k, v)| {
                let key_at = Place::Offset(k.span().start);
                (k.get_ref().to_string(), key_at, toml_located(v))
            })
            .collect(),
    )
}

fn toml_located(value: &toml::Spanned<toml::de::DeValue<'_>>) -> Located {
    let node = match value.get_ref() {
        toml::de::DeValue::Table(t) => toml_table(t),
        toml::de::DeValue::Array(items) => Node::Seq(items.iter().map(toml_located).collect()),
        _ => Node::Leaf,
    };
    Located {
        pos: Place::Offset(value.span().start),
        node,
    }
}

/// A YAML node with positions, read through serde-saphyr's `Spanned`.
enum YamlNode {
    Map(
        Vec<(
            serde_saphyr::Spanned<KeyText>,
            serde_saphyr::Spanned<YamlNode>,
        )>,
    ),
    Seq(Vec<serde_saphyr::Spanned<YamlNode>>),
    Leaf,
}

fn yaml_place<T>(spanned: &serde_saphyr::Spanned<T>) -> Place {
    Place::LineColumn(Position {
        line: usize::try_from(spanned.referenced.line()).unwrap_or(1),
        column: usize::try_from(spanned.referenced.column()).unwrap_or(1),
    })
}

fn yaml_located(spanned: serde_saphyr::Spanned<YamlNode>) -> Located {
    let pos = yaml_place(&spanned);
    let node = match spanned.value {
        YamlNode::Map(entries) => Node::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key_at = yaml_place(&k);
                    (k.value.0, key_at, yaml_located(v))
                })
                .collect(),
        ),
        YamlNode::Seq(items) => Node::Seq(items.into_iter().map(yaml_located).collect()),
        YamlNode::Leaf => Node::Leaf,
    };
    Located { pos, node }
}

impl<'de> Deserialize<'de> for YamlNode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlNodeVisitor)
    }
}

struct YamlNodeVisitor;

macro_rules! leaf {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $ty) -> Result<YamlNode, E> { Ok(YamlNode::Leaf) })*
    };
}

impl<'de> Visitor<'de> for YamlNodeVisitor {
    type Value = YamlNode;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML node")
    }

    leaf!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<YamlNode, E> {
        Ok(YamlNode::Leaf)
    }

    fn visit_none<E: de::Error>(self) -> Result<YamlNode, E> {
        Ok(YamlNode::Leaf)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<YamlNode, D::Error> {
        YamlNode::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<YamlNode, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(YamlNode::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<YamlNode, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<serde_saphyr::Spanned<KeyText>>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(YamlNode::Map(entries))
    }
}

/// A mapping key of any scalar type, kept as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str =
        "[[routes]]\nname = \"web\"\n\n  [[routes.backends]]\n  name = \"blue\"\n  weight = 90\n";
    const YAML: &str =
        "routes:\n  - name: web\n    backends:\n      - name: blue\n        weight: 90\n";

    #[test]
    fn toml_path_points_at_the_value() {
        let map = SourceMap::parse(TOML, Format::Toml);
        assert_eq!(
            map.locate("routes[0].backends[0].weight"),
            Position {
                line: 6,
                column: 12
            }
        );
        assert_eq!(
            map.locate("routes[0].name"),
            Position { line: 2, column: 8 }
        );
    }

    #[test]
    fn yaml_path_points_at_the_value() {
        let map = SourceMap::parse(YAML, Format::Yaml);
        assert_eq!(
            map.locate("routes[0].backends[0].weight"),
            Position {
                line: 5,
                column: 17
            }
        );
    }

    #[test]
    fn missing_field_points_at_its_parent() {
        let map = SourceMap::parse(TOML, Format::Toml);
        let parent = map.locate("routes[0].backends[0]");
        assert_eq!(map.locate("routes[0].backends[0].health.path"), parent);
    }

    #[test]
    fn keys_are_located_at_the_key() {
        let map = SourceMap::parse(TOML, Format::Toml);
        let key = Position { line: 6, column: 3 };
        assert_eq!(map.locate_key("routes[0].backends[0].weight"), key);
        let map = SourceMap::parse(YAML, Format::Yaml);
        let key = Position { line: 5, column: 9 };
        assert_eq!(map.locate_key("routes[0].backends[0].weight"), key);
    }

    #[test]
    fn offsets_count_characters() {
        assert_eq!(
            Position::of_offset("é = 1\nab", 8),
            Position { line: 2, column: 2 }
        );
    }
}
